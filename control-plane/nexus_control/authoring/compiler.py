"""Compiles a policy set into the data document the Rego library reads.

The output shape is the contract in ``rego/README.md``: every collection is
an object keyed by id so a decision costs constant-time lookups. Grants are
resolved here, once per build, from roles and bindings, so that a request
never walks a role hierarchy. The output is deterministic: the same policy
set always gives the same document.
"""

from __future__ import annotations

from typing import Any

from nexus_control.authoring.config import (
    ApiKeyEntry,
    BudgetConfig,
    CompiledConfig,
    FlagConfig,
    ModelConfig,
    OnAnomalyConfig,
    RetentionEntry,
    SlottedVariant,
    TenantConfig,
    WindowConfig,
)
from nexus_control.authoring.failover import compile_providers
from nexus_control.authoring.policyset import ApiKeyGrant, PolicySet
from nexus_control.authoring.ratelimits import compile_rate_limits
from nexus_control.authoring.slos import compile_capabilities
from nexus_control.authoring.spec import Budget, CustomWindow, Flag, Model, Tenant, WindowName

__all__ = ["APPROVAL_AUDIENCE", "APPROVAL_ISSUER", "compile_data", "slot_bound"]

BASIS_POINTS = 10_000
SLOTS = 16**8
APPROVAL_ISSUER = "nexus-control-plane"
APPROVAL_AUDIENCE = "nexus-gateway"


def compile_data(policy: PolicySet, approval_jwks: str) -> CompiledConfig:
    """Build ``data.nexus.config`` for ``policy``.

    ``approval_jwks`` is the control plane's public JWKS (compact JSON) that
    verifies tool-approval tokens.
    """
    config = _compile_core(policy, approval_jwks)
    if policy.rate_limits:
        config["rate_limits"] = compile_rate_limits(policy.rate_limits)
    if policy.capabilities:
        config["capabilities"] = compile_capabilities(policy.capabilities)
    if policy.failover.providers:
        config["providers"] = compile_providers(policy.failover)
    if policy.failover.priorities:
        config["failover"] = {j: list(regions) for j, regions in policy.failover.priorities}
    return config


def _compile_core(policy: PolicySet, approval_jwks: str) -> CompiledConfig:
    return {
        "bundle": {"name": policy.name},
        "regions": {r.id: {"jurisdiction": r.jurisdiction} for r in _by_id(policy.regions)},
        "tenants": {t.id: _tenant(t) for t in _by_id(policy.tenants)},
        "models": {m.id: _model(m) for m in _by_id(policy.models)},
        "roles": {
            r.id: {"permissions": dict.fromkeys(sorted(r.permissions), True)}
            for r in _by_id(policy.roles)
        },
        "grants": _grants(policy),
        "api_keys": {digest: _api_key(grant) for digest, grant in sorted(policy.api_keys.items())},
        "issuers": {
            url: {
                "audience": issuer.audience,
                "tenant_claim": issuer.tenant_claim,
                "tenants": dict.fromkeys(sorted(issuer.tenants), True),
                "jwks": jwks,
            }
            for url, (issuer, jwks) in sorted(policy.issuers.items())
        },
        "record_signers": {
            url: {
                "audience": signer.audience,
                "tenants": dict.fromkeys(sorted(signer.tenants), True),
                "max_ttl_s": signer.max_ttl_seconds,
                "jwks": jwks,
            }
            for url, (signer, jwks) in sorted(policy.record_signers.items())
        },
        "approval": {
            "issuer": APPROVAL_ISSUER,
            "audience": APPROVAL_AUDIENCE,
            "jwks": approval_jwks,
            "max_ttl_s": {risk.value: ttl for risk, ttl in sorted(policy.approval_ttl_s.items())},
        },
        "tools": {
            t.id: {
                "risk": t.risk.value,
                "permission": t.permission,
                "approval_required": t.approval_required,
                "schema": t.arguments,
            }
            for t in _by_id(policy.tools)
        },
        "prompts": {
            p.id: {
                "owner": p.owner,
                "risk": p.risk.value,
                "default_version": p.default_version,
                "versions": {v.version: {"status": v.status} for v in p.versions},
            }
            for p in _by_id(policy.prompts)
        },
        "retention": _retention(policy),
        "rollouts": {
            "models": {f.key: _flag(f) for f in _by_id(policy.flags) if f.target == "model"},
            "prompts": {f.key: _flag(f) for f in _by_id(policy.flags) if f.target == "prompt"},
        },
    }


def _tenant(tenant: Tenant) -> TenantConfig:
    out: TenantConfig = {
        "name": tenant.name,
        "plan": tenant.plan.value,
        "status": tenant.status,
        "jurisdiction": tenant.jurisdiction,
        "budget": _budget(tenant.budget),
    }
    if tenant.decision_log is not None:
        out["decision_log"] = {"wait_for": tenant.decision_log.wait_for}
    if tenant.time_zone != "UTC":
        out["time_zone"] = tenant.time_zone
    return out


def _window(window: WindowName | CustomWindow) -> WindowConfig:
    if isinstance(window, CustomWindow):
        return {"kind": "days", "days": window.days, "anchor": window.anchor.isoformat()}
    assert window != "month"
    return {"kind": window}


def _budget(budget: Budget) -> BudgetConfig:
    # Optional fields appear only when set, so a bundle that sets none compiles as before.
    entry: BudgetConfig = {
        "monthly_cap_usd": budget.monthly_cap_usd,
        "per_model": dict(sorted(budget.per_model.items())),
        "per_feature": dict(sorted(budget.per_feature.items())),
        "soft_cap_ratio": budget.soft_cap_percent / 100,
        "on_hard_cap": budget.on_hard_cap,
        "before_state": budget.before_state,
    }
    if budget.window != "month":
        entry["window"] = _window(budget.window)
    if budget.max_request_usd is not None:
        entry["max_request_usd"] = budget.max_request_usd
    if budget.allow_unpriced_models:
        entry["allow_unpriced_models"] = True
    if budget.on_anomaly is not None:
        action: OnAnomalyConfig = {}
        if budget.on_anomaly.lower_soft_cap_to_percent is not None:
            action["lower_soft_cap_to_ratio"] = budget.on_anomaly.lower_soft_cap_to_percent / 100
        if budget.on_anomaly.hold_models_above_usd_per_mtok is not None:
            action["hold_models_above_usd_per_mtok"] = (
                budget.on_anomaly.hold_models_above_usd_per_mtok
            )
        entry["on_anomaly"] = action
    return entry


def _model(model: Model) -> ModelConfig:
    entry: ModelConfig = {
        "provider": model.provider,
        "plans": {p.value: True for p in sorted(model.plans)},
    }
    if model.price is not None:
        entry["price"] = {
            "input_usd_per_mtok": model.price.input_usd_per_mtok,
            "output_usd_per_mtok": model.price.output_usd_per_mtok,
        }
    if model.max_output_tokens is not None:
        entry["max_output_tokens"] = model.max_output_tokens
    if model.fallbacks:
        entry["fallbacks"] = list(model.fallbacks)
    return entry


def _api_key(grant: ApiKeyGrant) -> ApiKeyEntry:
    entry: ApiKeyEntry = {"tenant": grant.tenant, "subject": f"apikey:{grant.key_id}"}
    if grant.feature is not None:
        entry["feature"] = grant.feature
    return entry


def _by_id(items: dict[str, Any]) -> list[Any]:
    return [items[k] for k in sorted(items)]


def _grants(policy: PolicySet) -> dict[str, dict[str, dict[str, bool]]]:
    grants: dict[str, dict[str, set[str]]] = {}
    for binding in policy.bindings:
        permissions = policy.roles[binding.role].permissions
        subjects = [
            *(f"user:{u}" for u in binding.users),
            *(f"service:{s}" for s in binding.services),
            *(f"apikey:{k.id}" for k in binding.api_keys),
        ]
        tenant = grants.setdefault(binding.tenant, {})
        for subject in subjects:
            tenant.setdefault(subject, set()).update(permissions)
    return {
        tenant: {
            subject: dict.fromkeys(sorted(perms), True)
            for subject, perms in sorted(subjects.items())
        }
        for tenant, subjects in sorted(grants.items())
    }


def _retention(policy: PolicySet) -> dict[str, dict[str, RetentionEntry]]:
    out: dict[str, dict[str, RetentionEntry]] = {
        "*": {
            cls: {"days": rule.days, "delete": rule.delete, "legal_hold": rule.legal_hold}
            for cls, rule in sorted(policy.retention_defaults.items())
        }
    }
    for (tenant, cls), rule in sorted(policy.retention.items()):
        out.setdefault(tenant, {})[cls] = {
            "days": rule.days,
            "delete": rule.delete,
            "legal_hold": rule.legal_hold,
        }
    return out


def slot_bound(basis_points: int) -> str:
    """The slot (first 8 hex digits of a SHA-256) at ``basis_points``/10000 of the way.

    Slots compare as strings; "g" sorts after every slot, so it closes the
    last range and stands for 100 %.
    """
    if basis_points >= BASIS_POINTS:
        return "g"
    return format(basis_points * SLOTS // BASIS_POINTS, "08x")


def _flag(flag: Flag) -> FlagConfig:
    variants: list[SlottedVariant] = []
    lower = 0
    for variant in flag.variants:
        upper = lower + variant.weight * (BASIS_POINTS // 100)
        if upper > lower:
            variants.append(
                {
                    "name": variant.name,
                    "weight": variant.weight,
                    "from": slot_bound(lower),
                    "to": slot_bound(upper),
                }
            )
        lower = upper
    return {
        "id": flag.id,
        "baseline": flag.baseline,
        "canary_percent": flag.canary_percent,
        "canary_below": slot_bound(flag.canary_percent * (BASIS_POINTS // 100)),
        "sticky": flag.sticky,
        "kill_switch": flag.kill_switch,
        "variants": variants,
        "overrides": {o.tenant: o.variant for o in sorted(flag.overrides, key=lambda o: o.tenant)},
    }
