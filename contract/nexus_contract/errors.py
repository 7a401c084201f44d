"""The base of every error a NexusAI command reports to a person.

Each package raises its own subclasses, one per way of failing, with a
message that says what failed, where, and what to do next. The CLI catches
`NexusError` once and maps the class to an exit code; the HTTP API maps it to
a status code. Neither table lives here: a domain error knows nothing of exit
codes or HTTP.
"""

from __future__ import annotations

__all__ = ["NexusError"]


class NexusError(Exception):
    """A failure the user can act on; ``str(error)`` is the whole message."""

    def diagnostics(self) -> str:
        """The message for a person: what failed, where, and what to do next."""
        return str(self)
