"""Semantic diff of two compiled policies: what a change does to access.

Both sides are compiled ``data.nexus.config`` documents (from a bundle
directory or a built archive), so the diff sees what enforcers will see.
Every change is classified: it *widens* access (someone may now do something
they could not), *narrows* it, or is *neutral* (routing, wording). Approvals
key off widening: a change that widens access, lowers a tool's risk or raises
a budget needs a second person.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

_PLAN_RANK = {"free": 0, "team": 1, "enterprise": 2}
_RISK_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


class Effect(StrEnum):
    WIDENS = "widens"
    NARROWS = "narrows"
    NEUTRAL = "neutral"


@dataclass(frozen=True, order=True)
class Change:
    area: str
    subject: str
    detail: str
    effect: Effect

    def as_dict(self) -> dict[str, str]:
        return {
            "area": self.area,
            "subject": self.subject,
            "detail": self.detail,
            "effect": self.effect.value,
        }


@dataclass(frozen=True)
class PolicyDiff:
    changes: tuple[Change, ...]

    @property
    def widens(self) -> bool:
        return any(c.effect is Effect.WIDENS for c in self.changes)

    @property
    def raises_budget(self) -> bool:
        return any(c.area == "budget" and c.effect is Effect.WIDENS for c in self.changes)

    @property
    def lowers_tool_risk(self) -> bool:
        return any(c.area == "tool" and "risk lowered" in c.detail for c in self.changes)

    @property
    def needs_second_approver(self) -> bool:
        """Widening access, lowering a tool's risk or raising a budget."""
        return self.widens

    def as_dict(self) -> dict[str, Any]:
        return {
            "widens": self.widens,
            "needs_second_approver": self.needs_second_approver,
            "changes": [c.as_dict() for c in self.changes],
        }


def diff_configs(old: dict[str, Any], new: dict[str, Any]) -> PolicyDiff:
    """Every semantic change from ``old`` to ``new`` (both ``data.nexus.config``)."""
    changes: list[Change] = []
    for differ in (
        _tenants,
        _budgets,
        _grants,
        _api_keys,
        _issuers,
        _roles,
        _models,
        _tools,
        _prompts,
        _retention,
        _rollouts,
        _regions,
    ):
        changes.extend(differ(old, new))
    return PolicyDiff(tuple(sorted(changes, key=lambda c: (c.area, c.subject, c.detail))))


def _section(doc: dict[str, Any], *path: str) -> dict[str, Any]:
    node: Any = doc
    for key in path:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _added_removed(
    area: str, old: dict[str, Any], new: dict[str, Any], added: Effect, removed: Effect
) -> Iterator[Change]:
    for key in sorted(new.keys() - old.keys()):
        yield Change(area, key, "added", added)
    for key in sorted(old.keys() - new.keys()):
        yield Change(area, key, "removed", removed)


def _tenants(old: dict[str, Any], new: dict[str, Any]) -> Iterator[Change]:
    before, after = _section(old, "tenants"), _section(new, "tenants")
    yield from _added_removed("tenant", before, after, Effect.WIDENS, Effect.NARROWS)
    for tid in sorted(before.keys() & after.keys()):
        a, b = before[tid], after[tid]
        if a.get("plan") != b.get("plan"):
            up = _PLAN_RANK.get(b.get("plan"), 0) > _PLAN_RANK.get(a.get("plan"), 0)
            yield Change(
                "tenant",
                tid,
                f"plan {a.get('plan')} → {b.get('plan')}",
                Effect.WIDENS if up else Effect.NARROWS,
            )
        if a.get("status") != b.get("status"):
            yield Change(
                "tenant",
                tid,
                f"status {a.get('status')} → {b.get('status')}",
                Effect.WIDENS if b.get("status") == "active" else Effect.NARROWS,
            )
        if a.get("jurisdiction") != b.get("jurisdiction"):
            narrowed = a.get("jurisdiction") is None
            yield Change(
                "tenant",
                tid,
                f"residency {a.get('jurisdiction') or 'any region'} → "
                f"{b.get('jurisdiction') or 'any region'}",
                Effect.NARROWS if narrowed else Effect.WIDENS,
            )


def _cap_change(
    subject: str, what: str, before: float | None, after: float | None
) -> Change | None:
    if before == after:
        return None
    if before is None:
        return Change("budget", subject, f"{what} cap added: {after}", Effect.NARROWS)
    if after is None:
        return Change("budget", subject, f"{what} cap removed (was {before})", Effect.WIDENS)
    effect = Effect.WIDENS if after > before else Effect.NARROWS
    verb = "raised" if after > before else "lowered"
    return Change("budget", subject, f"{what} cap {verb}: {before} → {after}", effect)


def _budgets(old: dict[str, Any], new: dict[str, Any]) -> Iterator[Change]:
    before, after = _section(old, "tenants"), _section(new, "tenants")
    for tid in sorted(before.keys() & after.keys()):
        a, b = before[tid].get("budget", {}), after[tid].get("budget", {})
        change = _cap_change(tid, "monthly", a.get("monthly_cap_usd"), b.get("monthly_cap_usd"))
        if change:
            yield change
        for scope in ("per_model", "per_feature"):
            caps_a, caps_b = a.get(scope, {}), b.get(scope, {})
            for key in sorted(caps_a.keys() | caps_b.keys()):
                label = f"{scope.removeprefix('per_')} {key}"
                change = _cap_change(tid, label, caps_a.get(key), caps_b.get(key))
                if change:
                    yield change
        if a.get("on_hard_cap") != b.get("on_hard_cap"):
            yield Change(
                "budget",
                tid,
                f"on hard cap: {a.get('on_hard_cap')} → {b.get('on_hard_cap')}",
                Effect.WIDENS if b.get("on_hard_cap") == "refuse" else Effect.NARROWS,
            )
        if a.get("soft_cap_ratio") != b.get("soft_cap_ratio"):
            yield Change(
                "budget",
                tid,
                f"soft cap {a.get('soft_cap_ratio')} → {b.get('soft_cap_ratio')}",
                Effect.NEUTRAL,
            )


def _grants(old: dict[str, Any], new: dict[str, Any]) -> Iterator[Change]:
    before, after = _section(old, "grants"), _section(new, "grants")
    for tid in sorted(before.keys() | after.keys()):
        subjects_a, subjects_b = before.get(tid, {}), after.get(tid, {})
        for subject in sorted(subjects_a.keys() | subjects_b.keys()):
            perms_a = set(subjects_a.get(subject, {}))
            perms_b = set(subjects_b.get(subject, {}))
            name = f"{tid}/{subject}"
            if perms_b - perms_a:
                yield Change(
                    "grant", name, "granted " + ", ".join(sorted(perms_b - perms_a)), Effect.WIDENS
                )
            if perms_a - perms_b:
                yield Change(
                    "grant", name, "revoked " + ", ".join(sorted(perms_a - perms_b)), Effect.NARROWS
                )


def _api_keys(old: dict[str, Any], new: dict[str, Any]) -> Iterator[Change]:
    before, after = _section(old, "api_keys"), _section(new, "api_keys")

    def label(entry: dict[str, Any]) -> str:
        return f"{entry.get('tenant')}/{entry.get('subject')}"

    for digest in sorted(after.keys() - before.keys()):
        yield Change("api key", label(after[digest]), "added", Effect.WIDENS)
    for digest in sorted(before.keys() - after.keys()):
        yield Change("api key", label(before[digest]), "revoked", Effect.NARROWS)
    for digest in sorted(before.keys() & after.keys()):
        if before[digest] != after[digest]:
            yield Change(
                "api key",
                label(after[digest]),
                f"moved from {label(before[digest])}",
                Effect.WIDENS,
            )


def _issuers(old: dict[str, Any], new: dict[str, Any]) -> Iterator[Change]:
    before, after = _section(old, "issuers"), _section(new, "issuers")
    yield from _added_removed("issuer", before, after, Effect.WIDENS, Effect.NARROWS)
    for url in sorted(before.keys() & after.keys()):
        for field in ("audience", "tenant_claim", "jwks"):
            if before[url].get(field) != after[url].get(field):
                yield Change("issuer", url, f"{field} changed", Effect.WIDENS)


def _roles(old: dict[str, Any], new: dict[str, Any]) -> Iterator[Change]:
    before, after = _section(old, "roles"), _section(new, "roles")
    yield from _added_removed("role", before, after, Effect.NEUTRAL, Effect.NEUTRAL)
    for rid in sorted(before.keys() & after.keys()):
        perms_a = set(before[rid].get("permissions", {}))
        perms_b = set(after[rid].get("permissions", {}))
        if perms_b - perms_a:
            yield Change("role", rid, "adds " + ", ".join(sorted(perms_b - perms_a)), Effect.WIDENS)
        if perms_a - perms_b:
            yield Change(
                "role", rid, "drops " + ", ".join(sorted(perms_a - perms_b)), Effect.NARROWS
            )


def _models(old: dict[str, Any], new: dict[str, Any]) -> Iterator[Change]:
    before, after = _section(old, "models"), _section(new, "models")
    yield from _added_removed("model", before, after, Effect.WIDENS, Effect.NARROWS)
    for mid in sorted(before.keys() & after.keys()):
        plans_a = set(before[mid].get("plans", {}))
        plans_b = set(after[mid].get("plans", {}))
        if plans_b - plans_a:
            yield Change(
                "model",
                mid,
                "opened to plans " + ", ".join(sorted(plans_b - plans_a)),
                Effect.WIDENS,
            )
        if plans_a - plans_b:
            yield Change(
                "model",
                mid,
                "closed to plans " + ", ".join(sorted(plans_a - plans_b)),
                Effect.NARROWS,
            )


def _tools(old: dict[str, Any], new: dict[str, Any]) -> Iterator[Change]:
    before, after = _section(old, "tools"), _section(new, "tools")
    yield from _added_removed("tool", before, after, Effect.WIDENS, Effect.NARROWS)
    for tid in sorted(before.keys() & after.keys()):
        a, b = before[tid], after[tid]
        risk_a, risk_b = _RISK_RANK.get(a.get("risk"), 3), _RISK_RANK.get(b.get("risk"), 3)
        if risk_b < risk_a:
            yield Change("tool", tid, f"risk lowered: {a['risk']} → {b['risk']}", Effect.WIDENS)
        elif risk_b > risk_a:
            yield Change("tool", tid, f"risk raised: {a['risk']} → {b['risk']}", Effect.NARROWS)
        if a.get("approval_required") and not b.get("approval_required"):
            yield Change("tool", tid, "human approval no longer required", Effect.WIDENS)
        elif b.get("approval_required") and not a.get("approval_required"):
            yield Change("tool", tid, "human approval now required", Effect.NARROWS)
        if a.get("permission") != b.get("permission"):
            yield Change(
                "tool",
                tid,
                f"permission {a.get('permission')} → {b.get('permission')}",
                Effect.WIDENS,
            )
        if a.get("schema") != b.get("schema"):
            yield Change("tool", tid, "argument schema changed", Effect.NEUTRAL)


def _prompts(old: dict[str, Any], new: dict[str, Any]) -> Iterator[Change]:
    before, after = _section(old, "prompts"), _section(new, "prompts")
    yield from _added_removed("prompt", before, after, Effect.WIDENS, Effect.NARROWS)
    for pid in sorted(before.keys() & after.keys()):
        va, vb = before[pid].get("versions", {}), after[pid].get("versions", {})
        for version in sorted(va.keys() | vb.keys()):
            sa = va.get(version, {}).get("status")
            sb = vb.get(version, {}).get("status")
            if sa == sb:
                continue
            live_before = sa not in (None, "retired")
            live_after = sb not in (None, "retired")
            effect = Effect.NEUTRAL
            if live_after and not live_before:
                effect = Effect.WIDENS
            elif live_before and not live_after:
                effect = Effect.NARROWS
            yield Change(
                "prompt", f"{pid}@{version}", f"{sa or 'absent'} → {sb or 'absent'}", effect
            )
        if before[pid].get("default_version") != after[pid].get("default_version"):
            yield Change(
                "prompt",
                pid,
                f"default version {before[pid].get('default_version')} → "
                f"{after[pid].get('default_version')}",
                Effect.NEUTRAL,
            )


def _retention(old: dict[str, Any], new: dict[str, Any]) -> Iterator[Change]:
    before, after = _section(old, "retention"), _section(new, "retention")
    for scope in sorted(before.keys() | after.keys()):
        classes_a, classes_b = before.get(scope, {}), after.get(scope, {})
        for cls in sorted(classes_a.keys() | classes_b.keys()):
            a, b = classes_a.get(cls), classes_b.get(cls)
            name = f"{'default' if scope == '*' else scope}/{cls}"
            if a is None or b is None:
                yield Change("retention", name, "added" if a is None else "removed", Effect.NEUTRAL)
                continue
            if a["days"] != b["days"]:
                longer = b["days"] > a["days"]
                yield Change(
                    "retention",
                    name,
                    f"kept {a['days']} → {b['days']} days",
                    Effect.WIDENS if longer else Effect.NARROWS,
                )
            if a["legal_hold"] != b["legal_hold"]:
                yield Change(
                    "retention",
                    name,
                    "legal hold lifted" if a["legal_hold"] else "legal hold placed",
                    Effect.WIDENS if a["legal_hold"] else Effect.NARROWS,
                )
            if a["delete"] != b["delete"]:
                yield Change(
                    "retention", name, f"delete {a['delete']} → {b['delete']}", Effect.NEUTRAL
                )


def _rollouts(old: dict[str, Any], new: dict[str, Any]) -> Iterator[Change]:
    for target in ("models", "prompts"):
        before = _section(old, "rollouts", target)
        after = _section(new, "rollouts", target)
        area = f"rollout ({target[:-1]})"
        yield from _added_removed(area, before, after, Effect.NEUTRAL, Effect.NEUTRAL)
        for key in sorted(before.keys() & after.keys()):
            a, b = before[key], after[key]
            if a.get("kill_switch") != b.get("kill_switch"):
                yield Change(
                    area,
                    key,
                    "kill switch " + ("on" if b.get("kill_switch") else "off"),
                    Effect.NEUTRAL,
                )
            if a.get("canary_percent") != b.get("canary_percent"):
                yield Change(
                    area,
                    key,
                    f"canary {a.get('canary_percent')}% → {b.get('canary_percent')}%",
                    Effect.NEUTRAL,
                )
            weights_a = _weights(a)
            weights_b = _weights(b)
            if weights_a != weights_b:
                yield Change(
                    area,
                    key,
                    f"weights {_fmt_weights(weights_a)} → {_fmt_weights(weights_b)}",
                    Effect.NEUTRAL,
                )
            if a.get("baseline") != b.get("baseline"):
                yield Change(
                    area, key, f"baseline {a.get('baseline')} → {b.get('baseline')}", Effect.NEUTRAL
                )
            if a.get("overrides") != b.get("overrides"):
                yield Change(area, key, "tenant overrides changed", Effect.NEUTRAL)


def _weights(flag: dict[str, Any]) -> dict[str, int]:
    return {v["name"]: int(v.get("weight", 0)) for v in flag.get("variants", [])}


def _fmt_weights(weights: dict[str, int]) -> str:
    return "/".join(f"{name}:{w}" for name, w in weights.items()) or "none"


def _regions(old: dict[str, Any], new: dict[str, Any]) -> Iterator[Change]:
    before, after = _section(old, "regions"), _section(new, "regions")
    yield from _added_removed("region", before, after, Effect.NEUTRAL, Effect.NARROWS)
    for rid in sorted(before.keys() & after.keys()):
        if before[rid].get("jurisdiction") != after[rid].get("jurisdiction"):
            yield Change(
                "region",
                rid,
                f"jurisdiction {before[rid].get('jurisdiction')} → "
                f"{after[rid].get('jurisdiction')}",
                Effect.WIDENS,
            )
