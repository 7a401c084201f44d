"""How a rollout request fails: the errors the engine and the diff's pages share."""

from __future__ import annotations

from nexus_contract.errors import NexusError

__all__ = ["RolloutError", "RolloutNotFoundError"]


class RolloutError(NexusError):
    """A rollout request the rollout's state does not allow; nothing was changed."""


class RolloutNotFoundError(RolloutError):
    """No rollout (or revision) with that id."""
