"""What every NexusAI service runs on: tools, databases, HTTP plumbing, logs, servers.

`toolchain` finds the real programs (OPA, Envoy); `database` makes engines and
runs Alembic for a schema; `http` is the API's error body, bounded request
bodies and its middleware; `logs` writes JSON; `server` runs an ASGI app on a
thread. Nothing here knows a product concern, and nothing of ours but
`nexus_contract` is imported.
"""
