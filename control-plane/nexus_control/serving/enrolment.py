"""Enrolling an enforcer: declare it in its region and mint the one token that speaks for it.

What ``nexus-policy dataplane up`` (and the demo) do for each enforcer they
start, as an operator with the control plane's database at hand: the
enforcer is registered (audited, as an operator's registration through the
API would be) and gets its own token, bound to its id and its region.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.orm import Session

from nexus_control.access.tokens import Role, create_token
from nexus_control.serving.enforcers import register_enforcer

__all__ = ["enrol_enforcer"]


def enrol_enforcer(
    session: Session, declared: Mapping[str, str], enforcer_id: str, region: str, actor: str
) -> str:
    """Declare ``enforcer_id`` in ``region`` and return its new token (shown once)."""
    if declared.get(enforcer_id) != region:
        register_enforcer(session, declared, enforcer_id, region, actor)
    token, _ = create_token(
        session,
        name=f"enforcer {enforcer_id}",
        role=Role.ENFORCER,
        region=region,
        enforcer_id=enforcer_id,
        actor=actor,
    )
    return token
