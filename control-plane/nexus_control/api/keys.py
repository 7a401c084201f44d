"""The key ring over HTTP: public keys for enforcers and builds, rotation for operators."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path

from nexus_control.access.keyring import KeyPurpose
from nexus_control.access.tokens import Principal, Role
from nexus_control.api.deps import OperatorDep, PlaneDep, require
from nexus_control.api.models import KeyActivation, KeyList, KeyRotation, KeyView

__all__ = ["activate_key", "list_keys", "retire_key", "rotate_key", "router"]

router = APIRouter(prefix="/v1/keys", tags=["keys"])

KeyReaderDep = Annotated[
    Principal,
    Depends(require(Role.AUTHOR, Role.APPROVER, Role.OPERATOR, Role.COMPLIANCE, Role.ENFORCER)),
]
"""Public keys: enforcers to trust bundles, authors to build, operators to rotate, reviewers."""
Kid = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]


@router.get("", response_model=KeyList)
async def list_keys(plane: PlaneDep, _: KeyReaderDep) -> KeyList:
    """Every signing key's public half and state, and the approval JWKS builds compile in."""

    def read() -> KeyList:
        return KeyList.model_validate(
            {"keys": plane.keyring.keys(), "approval_jwks": plane.keyring.approval_jwks()}
        )

    return await asyncio.to_thread(read)


@router.post("/{purpose}/rotate", status_code=201, response_model=KeyView)
async def rotate_key(
    purpose: KeyPurpose, body: KeyRotation, plane: PlaneDep, principal: OperatorDep
) -> KeyView:
    """Make a new key in the key provider: trusted from now on, signing once activated."""
    made = await asyncio.to_thread(plane.keyring.rotate, purpose, principal.name, body.algorithm)
    return KeyView.model_validate(made)


@router.post("/{kid}/activate", response_model=KeyView)
async def activate_key(
    kid: Kid, body: KeyActivation, plane: PlaneDep, principal: OperatorDep
) -> KeyView:
    """``kid`` signs from now on; the key it replaces stays trusted for the window."""
    active = await asyncio.to_thread(plane.activate_key, kid, principal.name, body.window_seconds)
    return KeyView.model_validate(active)


@router.post("/{kid}/retire", response_model=KeyView)
async def retire_key(kid: Kid, plane: PlaneDep, principal: OperatorDep) -> KeyView:
    """Trust ``kid`` nowhere from now on."""
    return KeyView.model_validate(
        await asyncio.to_thread(plane.keyring.retire, kid, principal.name)
    )
