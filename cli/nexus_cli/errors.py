"""One table from error class to exit code, applied once for every command.

Exit codes: 0 success; 1 the input has problems (specs, Rego, tests, a refused
request); 2 usage or environment errors (a missing tool or key, no token, the
control plane unreachable); 3 ``diff --fail-on-widening`` found a widening
change. Commands raise; `exit_code` decides.
"""

from __future__ import annotations

from nexus_audit.keyfiles import KeyFileError
from nexus_audit.service import AuditError
from nexus_cli.client import ApiCallError
from nexus_contract.errors import NexusError
from nexus_control.access.signing_keys import SigningKeyError
from nexus_runtime.replicas import SingleProcessError
from nexus_runtime.server import ServerError
from nexus_runtime.toolchain import ToolMissingError

__all__ = ["EXIT_ENVIRONMENT", "EXIT_PROBLEMS", "EXIT_WIDENING", "exit_code"]

EXIT_PROBLEMS = 1
EXIT_ENVIRONMENT = 2
EXIT_WIDENING = 3

_ENVIRONMENT: tuple[type[NexusError], ...] = (
    ToolMissingError,
    SigningKeyError,
    KeyFileError,
    AuditError,
    ServerError,
    SingleProcessError,
)
_API_ENVIRONMENT_STATUSES = frozenset({0, 401, 403})
"""Unreachable, unauthenticated, forbidden: the caller's setup, not the request, is at fault."""


def exit_code(error: NexusError) -> int:
    """The exit code for ``error``."""
    if isinstance(error, ApiCallError):
        return EXIT_ENVIRONMENT if error.status in _API_ENVIRONMENT_STATUSES else EXIT_PROBLEMS
    if isinstance(error, _ENVIRONMENT):
        return EXIT_ENVIRONMENT
    return EXIT_PROBLEMS
