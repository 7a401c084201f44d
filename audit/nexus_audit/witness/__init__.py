"""C2SP tlog-witness (https://c2sp.org/tlog-witness), both sides.

The witness (`nexus_audit.witness.service`, served by `nexus_audit.api.witness`
as ``nexus-policy witness serve``) holds its own key and its own storage, and
cosigns a log's checkpoint only when it is signed by the log and proven
consistent with the last one it cosigned for that log. The log side
(`nexus_audit.witness.client`) submits each new checkpoint to its witnesses
with a consistency proof and keeps their ``cosignature/v1`` lines.
"""

from nexus_audit.witness.protocol import AddCheckpoint, WitnessProtocolError

__all__ = ["AddCheckpoint", "WitnessProtocolError"]
