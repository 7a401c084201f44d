"""Throwaway API keys as an RBAC overlay: for trying a bundle with requests of one's own.

A bundle holds API keys only as SHA-256 hashes, so nobody can call it with the
keys it ships. `throwaway_keys` makes fresh random keys bound to tenants and
roles, and writes them as a spec overlay (``--overlay DIR``) that holds their
hashes only; the plain keys are returned once, to print and never store.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nexus_control.authoring.policyset import PolicySet

__all__ = [
    "KEY_PREFIX",
    "OVERLAY_FILE",
    "KeyGrant",
    "grants_for_every_binding",
    "throwaway_keys",
    "write_key_overlay",
]

KEY_PREFIX = "nx_"
OVERLAY_FILE = "throwaway-credentials.yaml"


@dataclass(frozen=True)
class KeyGrant:
    """One key to make: its id, its tenant, and the roles it is bound to there."""

    key_id: str
    tenant: str
    roles: tuple[str, ...]
    feature: str | None = None
    """The product feature the key's spend is booked to (per-feature caps), if any."""


def grants_for_every_binding(policy: PolicySet) -> list[KeyGrant]:
    """One key per (tenant, role) the policy binds anybody to: ``dev-<tenant>-<role>``."""
    pairs = sorted({(b.tenant, b.role) for b in policy.bindings})
    return [KeyGrant(f"dev-{tenant}-{role}", tenant, (role,)) for tenant, role in pairs]


def throwaway_keys(grants: Sequence[KeyGrant], directory: Path) -> dict[str, str]:
    """Write an overlay binding a fresh key per grant; return {key id: plain key}."""
    plain = {grant.key_id: KEY_PREFIX + secrets.token_urlsafe(32) for grant in grants}
    write_key_overlay(grants, plain, directory)
    return plain


def write_key_overlay(
    grants: Sequence[KeyGrant], plain: Mapping[str, str], directory: Path
) -> None:
    """Write the overlay binding ``plain[grant.key_id]`` per grant (its hash only)."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Throwaway API keys (hashes only); the plain keys were printed once.",
        "apiVersion: policy.nexus.ai/v1",
        "kind: RBAC",
        "bindings:",
    ]
    for grant in grants:
        digest = hashlib.sha256(plain[grant.key_id].encode()).hexdigest()
        for role in grant.roles:
            lines += [
                f"  - tenant: {grant.tenant}",
                f"    role: {role}",
                "    apiKeys:",
                f"      - id: {grant.key_id}",
                f"        sha256: {digest}",
            ]
            if grant.feature is not None:
                lines.append(f"        feature: {grant.feature}")
    (directory / OVERLAY_FILE).write_text("\n".join(lines) + "\n")
