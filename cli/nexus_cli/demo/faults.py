"""A fault the demo injects: a signing key rotated before the enforcers trust it.

An operator makes a new bundle-signing key and activates it at once, skipping
the step where enforcer configs are re-rendered to trust it. The next
revision is signed with a key the canary does not know: its real OPA refuses
the bundle (``verification key … not found``), reports the error, and the
rollout engine must contain the rollout in the canary and roll it back to
the last good revision, which is still signed by a key the canary trusts.
Afterwards the operator re-activates the previous key (still in its rotation
window) and retires the premature one.
"""

from __future__ import annotations

from dataclasses import dataclass

from nexus_cli.client import ControlPlaneClient

__all__ = ["PrematureRotation", "rotate_before_trust", "undo_rotation"]


@dataclass(frozen=True)
class PrematureRotation:
    previous: str
    """The key that signed until now (and that the enforcers trust)."""
    premature: str
    """The key activated before any enforcer was told to trust it."""


def rotate_before_trust(operator: ControlPlaneClient) -> PrematureRotation:
    """Rotate the bundle-signing key and activate the new one at once."""
    keys = operator.get("/v1/keys")["keys"]
    previous = next(
        k["kid"] for k in keys if k["purpose"] == "bundle-signing" and k["state"] == "active"
    )
    made = operator.post("/v1/keys/bundle-signing/rotate", {})
    operator.post(f"/v1/keys/{made['kid']}/activate", {})
    return PrematureRotation(previous=previous, premature=str(made["kid"]))


def undo_rotation(operator: ControlPlaneClient, rotation: PrematureRotation) -> None:
    """Sign with the previous key again and retire the premature one."""
    operator.post(f"/v1/keys/{rotation.previous}/activate", {})
    operator.post(f"/v1/keys/{rotation.premature}/retire")
