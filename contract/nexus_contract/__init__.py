"""The contract every NexusAI component agrees on, at the bottom of the import graph.

`nexus_contract.wire` names what crosses a process boundary (bundle names and
roots, headers, the decision path); `nexus_contract.canonical` is the one JSON
form the project hashes; `nexus_contract.decision` is the decision result the
Rego policy returns, with its JSON Schema; `nexus_contract.errors` is the base
of every error a command reports. Nothing of ours is imported here.
"""
