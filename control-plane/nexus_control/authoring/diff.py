"""What a change does to what enforcers decide: every file of the bundle, compared.

The data: both sides are compiled ``data.nexus.config`` documents, so the
diff sees what enforcers will see. Every change is classified: it *widens*
access (someone may now do something they could not), *narrows* it, or is
*neutral* (routing, wording).

The code: every Rego module (``system/log`` included) added, removed or
changed, with the packages and rules it adds, removes or changes and a
unified diff a reviewer reads. Rego can do anything, so no change to it is
judged safe by a program.

The manifest: its roots (what the bundle may claim in OPA's data tree).

Approvals key off both: a change that widens access, lowers a tool's risk,
raises a budget, changes the roots, or changes any policy code (unless the
fleet exempts that package) needs a second person.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field

from nexus_control.authoring.config import CompiledConfig

__all__ = [
    "MAX_MODULE_DIFF_CHARS",
    "BundleView",
    "Change",
    "Effect",
    "ModuleChange",
    "PolicyDiff",
    "diff_bundles",
    "diff_configs",
    "rego_package",
    "rego_rules",
]

MAX_MODULE_DIFF_CHARS = 200_000
"""A module's unified diff is cut here (the reviewer still sees every rule named)."""

_PLAN_RANK = {"free": 0, "team": 1, "enterprise": 2}
_RISK_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


class Effect(StrEnum):
    WIDENS = "widens"
    NARROWS = "narrows"
    NEUTRAL = "neutral"


class Change(BaseModel):
    """One semantic change: in which area, to what, how, and its effect on access."""

    model_config = ConfigDict(frozen=True)

    area: str
    subject: str
    detail: str
    effect: Effect


class ModuleChange(BaseModel):
    """One Rego module added, removed or changed, rule by rule, with its unified diff."""

    model_config = ConfigDict(frozen=True)

    path: str
    package: str
    status: Literal["added", "removed", "changed"]
    rules_added: tuple[str, ...] = ()
    rules_removed: tuple[str, ...] = ()
    rules_changed: tuple[str, ...] = ()
    diff: str = ""
    exempt: bool = False
    """The fleet exempts this package from the second-approver rule."""


class PolicyDiff(BaseModel):
    """Every change between two bundles: data changes sorted by area, subject and detail;
    code changes by module path."""

    model_config = ConfigDict(frozen=True)

    changes: tuple[Change, ...] = ()
    modules: tuple[ModuleChange, ...] = ()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def code_changed(self) -> bool:
        return bool(self.modules)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def widens(self) -> bool:
        return any(c.effect is Effect.WIDENS for c in self.changes)

    @property
    def raises_budget(self) -> bool:
        return any(c.area == "budget" and c.effect is Effect.WIDENS for c in self.changes)

    @property
    def lowers_tool_risk(self) -> bool:
        return any(c.area == "tool" and "risk lowered" in c.detail for c in self.changes)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def needs_second_approver(self) -> bool:
        """Widening access (tool risk, budgets and roots included) or policy code not exempted."""
        return self.widens or any(not m.exempt for m in self.modules)


Config = Mapping[str, Any]
"""A compiled config as the differs read it: maybe an older revision's, so every key is optional."""


def diff_configs(old: CompiledConfig | None, new: CompiledConfig) -> PolicyDiff:
    """Every semantic change from ``old`` to ``new`` (both ``data.nexus.config``).

    ``old`` is None for the first publication: everything in ``new`` is added.
    """
    before: Config = old or {}
    after: Config = new
    changes: list[Change] = []
    for differ in (
        _tenants,
        _budgets,
        _grants,
        _api_keys,
        _issuers,
        _record_signers,
        _roles,
        _models,
        _tools,
        _prompts,
        _retention,
        _rollouts,
        _regions,
        _capabilities,
        _quality,
    ):
        changes.extend(differ(before, after))
    changes.extend(_failover_changes(before, after))
    changes.extend(_anomaly_changes(before, after))
    changes.extend(_window_changes(before, after))
    return PolicyDiff(changes=tuple(sorted(changes, key=lambda c: (c.area, c.subject, c.detail))))


def _failover_changes(old: Config, new: Config) -> Iterator[Change]:
    # Imported here: failover_diff builds on this module's Change and Effect.
    from nexus_control.authoring.failover_diff import failover_changes

    return failover_changes(old, new)


def _anomaly_changes(old: Config, new: Config) -> Iterator[Change]:
    # Imported here: anomaly_diff builds on this module's Change and Effect.
    from nexus_control.authoring.anomaly_diff import anomaly_changes

    return anomaly_changes(old, new)


def _window_changes(old: Config, new: Config) -> Iterator[Change]:
    # Imported here: window_diff builds on this module's Change and Effect.
    from nexus_control.authoring.window_diff import window_changes

    return window_changes(old, new)


def _section(doc: Config, *path: str) -> dict[str, Any]:
    node: Any = doc
    for key in path:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _added_removed(
    area: str, old: dict[str, Any], new: dict[str, Any], added: Effect, removed: Effect
) -> Iterator[Change]:
    for key in sorted(new.keys() - old.keys()):
        yield Change(area=area, subject=key, detail="added", effect=added)
    for key in sorted(old.keys() - new.keys()):
        yield Change(area=area, subject=key, detail="removed", effect=removed)


def _tenants(old: Config, new: Config) -> Iterator[Change]:
    before, after = _section(old, "tenants"), _section(new, "tenants")
    yield from _added_removed("tenant", before, after, Effect.WIDENS, Effect.NARROWS)
    for tid in sorted(before.keys() & after.keys()):
        a, b = before[tid], after[tid]
        if a.get("plan") != b.get("plan"):
            up = _PLAN_RANK.get(b.get("plan"), 0) > _PLAN_RANK.get(a.get("plan"), 0)
            yield Change(
                area="tenant",
                subject=tid,
                detail=f"plan {a.get('plan')} → {b.get('plan')}",
                effect=Effect.WIDENS if up else Effect.NARROWS,
            )
        if a.get("status") != b.get("status"):
            yield Change(
                area="tenant",
                subject=tid,
                detail=f"status {a.get('status')} → {b.get('status')}",
                effect=Effect.WIDENS if b.get("status") == "active" else Effect.NARROWS,
            )
        if a.get("jurisdiction") != b.get("jurisdiction"):
            narrowed = a.get("jurisdiction") is None
            yield Change(
                area="tenant",
                subject=tid,
                detail=f"residency {a.get('jurisdiction') or 'any region'} → "
                f"{b.get('jurisdiction') or 'any region'}",
                effect=Effect.NARROWS if narrowed else Effect.WIDENS,
            )
        was, now = _waits(a), _waits(b)
        if was != now:
            yield Change(
                area="tenant",
                subject=tid,
                detail=f"decision log: answers {_WAIT_WORDS[was]} → {_WAIT_WORDS[now]}",
                effect=Effect.WIDENS if _WAIT_RANK[now] < _WAIT_RANK[was] else Effect.NARROWS,
            )


# How far a tenant's decisions go before its answers (None: the enforcer's default, fsync
# unless its operator chose otherwise): fewer guarantees are a widening, a second approver.
_WAIT_RANK = {"none": 0, "write": 1, None: 2, "fsync": 3}
_WAIT_WORDS = {
    "none": "do not wait",
    "write": "wait for the write",
    None: "enforcer default",
    "fsync": "wait for the fsync",
}


def _waits(tenant: Mapping[str, Any]) -> str | None:
    choice = tenant.get("decision_log")
    return str(choice["wait_for"]) if isinstance(choice, Mapping) else None


def _cap_change(
    subject: str, what: str, before: float | None, after: float | None
) -> Change | None:
    if before == after:
        return None
    if before is None:
        return Change(
            area="budget",
            subject=subject,
            detail=f"{what} cap added: {after}",
            effect=Effect.NARROWS,
        )
    if after is None:
        return Change(
            area="budget",
            subject=subject,
            detail=f"{what} cap removed (was {before})",
            effect=Effect.WIDENS,
        )
    effect = Effect.WIDENS if after > before else Effect.NARROWS
    verb = "raised" if after > before else "lowered"
    return Change(
        area="budget",
        subject=subject,
        detail=f"{what} cap {verb}: {before} → {after}",
        effect=effect,
    )


def _budgets(old: Config, new: Config) -> Iterator[Change]:
    before, after = _section(old, "tenants"), _section(new, "tenants")
    for tid in sorted(before.keys() & after.keys()):
        a, b = before[tid].get("budget", {}), after[tid].get("budget", {})
        # A tenant with a budget window other than the month caps each window.
        label = "per-window" if "window" in a or "window" in b else "monthly"
        change = _cap_change(tid, label, a.get("monthly_cap_usd"), b.get("monthly_cap_usd"))
        if change:
            yield change
        for scope in ("per_model", "per_feature"):
            caps_a, caps_b = a.get(scope, {}), b.get(scope, {})
            for key in sorted(caps_a.keys() | caps_b.keys()):
                label = f"{scope.removeprefix('per_')} {key}"
                change = _cap_change(tid, label, caps_a.get(key), caps_b.get(key))
                if change:
                    yield change
        change = _cap_change(tid, "per-request", a.get("max_request_usd"), b.get("max_request_usd"))
        if change:
            yield change
        unpriced_b = b.get("allow_unpriced_models", False)
        if a.get("allow_unpriced_models", False) != unpriced_b:
            yield Change(
                area="budget",
                subject=tid,
                detail=f"unpriced models {'allowed' if unpriced_b else 'refused'}",
                effect=Effect.WIDENS if unpriced_b else Effect.NARROWS,
            )
        if a.get("on_hard_cap") != b.get("on_hard_cap"):
            yield Change(
                area="budget",
                subject=tid,
                detail=f"on hard cap: {a.get('on_hard_cap')} → {b.get('on_hard_cap')}",
                effect=Effect.WIDENS if b.get("on_hard_cap") == "refuse" else Effect.NARROWS,
            )
        # An older revision without the field behaved as "allow" (budgets failed open).
        state_a, state_b = a.get("before_state", "allow"), b.get("before_state", "allow")
        if state_a != state_b:
            yield Change(
                area="budget",
                subject=tid,
                detail=f"before the state bundle: {state_a} → {state_b}",
                effect=Effect.WIDENS if state_b == "allow" else Effect.NARROWS,
            )
        if a.get("soft_cap_ratio") != b.get("soft_cap_ratio"):
            yield Change(
                area="budget",
                subject=tid,
                detail=f"soft cap {a.get('soft_cap_ratio')} → {b.get('soft_cap_ratio')}",
                effect=Effect.NEUTRAL,
            )


def _set_change(
    area: str, subject: str, before: set[str], after: set[str], gained: str, lost: str
) -> Iterator[Change]:
    """Members gained widen access, members lost narrow it (permissions, plans)."""
    if after - before:
        detail = f"{gained} {', '.join(sorted(after - before))}"
        yield Change(area=area, subject=subject, detail=detail, effect=Effect.WIDENS)
    if before - after:
        detail = f"{lost} {', '.join(sorted(before - after))}"
        yield Change(area=area, subject=subject, detail=detail, effect=Effect.NARROWS)


def _grants(old: Config, new: Config) -> Iterator[Change]:
    before, after = _section(old, "grants"), _section(new, "grants")
    for tid in sorted(before.keys() | after.keys()):
        subjects_a, subjects_b = before.get(tid, {}), after.get(tid, {})
        for subject in sorted(subjects_a.keys() | subjects_b.keys()):
            perms_a = set(subjects_a.get(subject, {}))
            perms_b = set(subjects_b.get(subject, {}))
            yield from _set_change(
                "grant", f"{tid}/{subject}", perms_a, perms_b, "granted", "revoked"
            )


def _api_keys(old: Config, new: Config) -> Iterator[Change]:
    before, after = _section(old, "api_keys"), _section(new, "api_keys")

    def label(entry: dict[str, Any]) -> str:
        return f"{entry.get('tenant')}/{entry.get('subject')}"

    for digest in sorted(after.keys() - before.keys()):
        yield Change(
            area="api key", subject=label(after[digest]), detail="added", effect=Effect.WIDENS
        )
    for digest in sorted(before.keys() - after.keys()):
        yield Change(
            area="api key", subject=label(before[digest]), detail="revoked", effect=Effect.NARROWS
        )
    for digest in sorted(before.keys() & after.keys()):
        if before[digest] != after[digest]:
            yield Change(
                area="api key",
                subject=label(after[digest]),
                detail=f"moved from {label(before[digest])}",
                effect=Effect.WIDENS,
            )


def _issuers(old: Config, new: Config) -> Iterator[Change]:
    before, after = _section(old, "issuers"), _section(new, "issuers")
    yield from _added_removed("issuer", before, after, Effect.WIDENS, Effect.NARROWS)
    for url in sorted(before.keys() & after.keys()):
        for field in ("audience", "tenant_claim", "jwks"):
            if before[url].get(field) != after[url].get(field):
                yield Change(
                    area="issuer", subject=url, detail=f"{field} changed", effect=Effect.WIDENS
                )


def _record_signers(old: Config, new: Config) -> Iterator[Change]:
    """A record store states records' class and age: trusting a new or changed one widens."""
    before, after = _section(old, "record_signers"), _section(new, "record_signers")
    yield from _added_removed("record signer", before, after, Effect.WIDENS, Effect.NARROWS)
    for url in sorted(before.keys() & after.keys()):
        for field in ("audience", "tenants", "max_ttl_s", "jwks"):
            if before[url].get(field) != after[url].get(field):
                yield Change(
                    area="record signer",
                    subject=url,
                    detail=f"{field} changed",
                    effect=Effect.WIDENS,
                )


def _roles(old: Config, new: Config) -> Iterator[Change]:
    before, after = _section(old, "roles"), _section(new, "roles")
    yield from _added_removed("role", before, after, Effect.NEUTRAL, Effect.NEUTRAL)
    for rid in sorted(before.keys() & after.keys()):
        perms_a = set(before[rid].get("permissions", {}))
        perms_b = set(after[rid].get("permissions", {}))
        yield from _set_change("role", rid, perms_a, perms_b, "adds", "drops")


def _models(old: Config, new: Config) -> Iterator[Change]:
    before, after = _section(old, "models"), _section(new, "models")
    yield from _added_removed("model", before, after, Effect.WIDENS, Effect.NARROWS)
    for mid in sorted(before.keys() & after.keys()):
        plans_a = set(before[mid].get("plans", {}))
        plans_b = set(after[mid].get("plans", {}))
        yield from _set_change("model", mid, plans_a, plans_b, "opened to plans", "closed to plans")
        price_a, price_b = before[mid].get("price"), after[mid].get("price")
        if price_a != price_b:
            # A lower or removed price lets more requests fit the remaining budget.
            cheaper = price_b is None or any(
                price_b.get(k, 0) < (price_a or {}).get(k, 0) for k in price_b
            )
            yield Change(
                area="budget",
                subject=mid,
                detail=f"price {price_a} → {price_b}",
                effect=Effect.WIDENS if cheaper else Effect.NARROWS,
            )


def _tools(old: Config, new: Config) -> Iterator[Change]:
    before, after = _section(old, "tools"), _section(new, "tools")
    yield from _added_removed("tool", before, after, Effect.WIDENS, Effect.NARROWS)
    for tid in sorted(before.keys() & after.keys()):
        a, b = before[tid], after[tid]
        risk_a, risk_b = _RISK_RANK.get(a.get("risk"), 3), _RISK_RANK.get(b.get("risk"), 3)
        if risk_b < risk_a:
            yield Change(
                area="tool",
                subject=tid,
                detail=f"risk lowered: {a['risk']} → {b['risk']}",
                effect=Effect.WIDENS,
            )
        elif risk_b > risk_a:
            yield Change(
                area="tool",
                subject=tid,
                detail=f"risk raised: {a['risk']} → {b['risk']}",
                effect=Effect.NARROWS,
            )
        if a.get("approval_required") and not b.get("approval_required"):
            yield Change(
                area="tool",
                subject=tid,
                detail="human approval no longer required",
                effect=Effect.WIDENS,
            )
        elif b.get("approval_required") and not a.get("approval_required"):
            yield Change(
                area="tool",
                subject=tid,
                detail="human approval now required",
                effect=Effect.NARROWS,
            )
        if a.get("permission") != b.get("permission"):
            yield Change(
                area="tool",
                subject=tid,
                detail=f"permission {a.get('permission')} → {b.get('permission')}",
                effect=Effect.WIDENS,
            )
        if a.get("schema") != b.get("schema"):
            yield Change(
                area="tool", subject=tid, detail="argument schema changed", effect=Effect.NEUTRAL
            )


def _prompts(old: Config, new: Config) -> Iterator[Change]:
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
                area="prompt",
                subject=f"{pid}@{version}",
                detail=f"{sa or 'absent'} → {sb or 'absent'}",
                effect=effect,
            )
        if before[pid].get("default_version") != after[pid].get("default_version"):
            yield Change(
                area="prompt",
                subject=pid,
                detail=f"default version {before[pid].get('default_version')} → "
                f"{after[pid].get('default_version')}",
                effect=Effect.NEUTRAL,
            )


def _retention(old: Config, new: Config) -> Iterator[Change]:
    before, after = _section(old, "retention"), _section(new, "retention")
    for scope in sorted(before.keys() | after.keys()):
        classes_a, classes_b = before.get(scope, {}), after.get(scope, {})
        for cls in sorted(classes_a.keys() | classes_b.keys()):
            a, b = classes_a.get(cls), classes_b.get(cls)
            name = f"{'default' if scope == '*' else scope}/{cls}"
            if a is None or b is None:
                yield Change(
                    area="retention",
                    subject=name,
                    detail="added" if a is None else "removed",
                    effect=Effect.NEUTRAL,
                )
                continue
            if a["days"] != b["days"]:
                longer = b["days"] > a["days"]
                yield Change(
                    area="retention",
                    subject=name,
                    detail=f"kept {a['days']} → {b['days']} days",
                    effect=Effect.WIDENS if longer else Effect.NARROWS,
                )
            if a["legal_hold"] != b["legal_hold"]:
                yield Change(
                    area="retention",
                    subject=name,
                    detail="legal hold lifted" if a["legal_hold"] else "legal hold placed",
                    effect=Effect.WIDENS if a["legal_hold"] else Effect.NARROWS,
                )
            if a["delete"] != b["delete"]:
                yield Change(
                    area="retention",
                    subject=name,
                    detail=f"delete {a['delete']} → {b['delete']}",
                    effect=Effect.NEUTRAL,
                )


def _rollouts(old: Config, new: Config) -> Iterator[Change]:
    for target in ("models", "prompts"):
        before = _section(old, "rollouts", target)
        after = _section(new, "rollouts", target)
        area = f"rollout ({target[:-1]})"
        yield from _added_removed(area, before, after, Effect.NEUTRAL, Effect.NEUTRAL)
        for key in sorted(before.keys() & after.keys()):
            a, b = before[key], after[key]
            if a.get("kill_switch") != b.get("kill_switch"):
                yield Change(
                    area=area,
                    subject=key,
                    detail="kill switch " + ("on" if b.get("kill_switch") else "off"),
                    effect=Effect.NEUTRAL,
                )
            if a.get("canary_percent") != b.get("canary_percent"):
                yield Change(
                    area=area,
                    subject=key,
                    detail=f"canary {a.get('canary_percent')}% → {b.get('canary_percent')}%",
                    effect=Effect.NEUTRAL,
                )
            weights_a = _weights(a)
            weights_b = _weights(b)
            if weights_a != weights_b:
                yield Change(
                    area=area,
                    subject=key,
                    detail=f"weights {_fmt_weights(weights_a)} → {_fmt_weights(weights_b)}",
                    effect=Effect.NEUTRAL,
                )
            if a.get("baseline") != b.get("baseline"):
                yield Change(
                    area=area,
                    subject=key,
                    detail=f"baseline {a.get('baseline')} → {b.get('baseline')}",
                    effect=Effect.NEUTRAL,
                )
            if a.get("overrides") != b.get("overrides"):
                yield Change(
                    area=area, subject=key, detail="tenant overrides changed", effect=Effect.NEUTRAL
                )


def _weights(flag: dict[str, Any]) -> dict[str, int]:
    return {v["name"]: int(v.get("weight", 0)) for v in flag.get("variants", [])}


def _fmt_weights(weights: dict[str, int]) -> str:
    return "/".join(f"{name}:{w}" for name, w in weights.items()) or "none"


def _regions(old: Config, new: Config) -> Iterator[Change]:
    before, after = _section(old, "regions"), _section(new, "regions")
    yield from _added_removed("region", before, after, Effect.NEUTRAL, Effect.NARROWS)
    for rid in sorted(before.keys() & after.keys()):
        if before[rid].get("jurisdiction") != after[rid].get("jurisdiction"):
            yield Change(
                area="region",
                subject=rid,
                detail=f"jurisdiction {before[rid].get('jurisdiction')} → "
                f"{after[rid].get('jurisdiction')}",
                effect=Effect.WIDENS,
            )


def _capabilities(old: Config, new: Config) -> Iterator[Change]:
    """Which SLO capability a route or tool counts toward: metrics only, never access."""
    for kind in ("routes", "tools"):
        before, after = _section(old, "capabilities", kind), _section(new, "capabilities", kind)
        for key in sorted(before.keys() | after.keys()):
            if before.get(key) != after.get(key):
                yield Change(
                    area="capability",
                    subject=f"{kind.removesuffix('s')} {key}",
                    detail=f"{before.get(key, 'none')} → {after.get(key, 'none')}",
                    effect=Effect.NEUTRAL,
                )


def _quality(old: Config, new: Config) -> Iterator[Change]:
    """Quality thresholds: a loosened, removed or dropped one widens (what may reach traffic),
    so it needs a second approver like any widening change; a new or stricter one narrows."""
    before, after = _section(old, "quality"), _section(new, "quality")
    for block in sorted(before.keys() | after.keys()):
        was = before.get(block, {}).get("thresholds", {})
        now = after.get(block, {}).get("thresholds", {})
        for name in sorted(was.keys() | now.keys()):
            a, b = was.get(name), now.get(name)
            if a == b:
                continue
            if a is None or b is None:
                loosens = b is None
            else:
                loosens = b < a if name.startswith("min") else b > a
            yield Change(
                area="quality",
                subject=block,
                detail=f"{name} {_threshold(a)} → {_threshold(b)}",
                effect=Effect.WIDENS if loosens else Effect.NARROWS,
            )


def _threshold(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


# --- the whole bundle --------------------------------------------------------------


@dataclass(frozen=True)
class BundleView:
    """One side of a bundle diff: compiled data, Rego modules by path, manifest roots."""

    config: Mapping[str, Any]
    modules: Mapping[str, bytes] = dataclass_field(default_factory=dict)
    roots: tuple[str, ...] = ()


def diff_bundles(
    old: BundleView | None, new: BundleView, *, exempt_packages: Set[str] = frozenset()
) -> PolicyDiff:
    """Every change from ``old`` to ``new``: data, code and manifest roots.

    A module change is exempt only when its package (before and after) is in
    ``exempt_packages``; ``system.log`` and the roots never are.
    """
    data = diff_configs(old.config if old else None, new.config)  # type: ignore[arg-type]
    before = old or BundleView({})
    changes = list(data.changes)
    if old is not None and tuple(sorted(before.roots)) != tuple(sorted(new.roots)):
        changes.append(
            Change(
                area="manifest",
                subject="roots",
                detail=f"{', '.join(sorted(before.roots)) or 'none'} → "
                f"{', '.join(sorted(new.roots)) or 'none'}",
                effect=Effect.WIDENS,
            )
        )
    modules = [
        change
        for path in sorted(before.modules.keys() | new.modules.keys())
        if (change := _module_change(path, before.modules.get(path), new.modules.get(path)))
    ]
    exempt = frozenset(p for p in exempt_packages if not p.startswith("system"))
    modules = [
        m.model_copy(update={"exempt": m.package in exempt and _same_package(old, new, m)})
        for m in modules
    ]
    return PolicyDiff(
        changes=tuple(sorted(changes, key=lambda c: (c.area, c.subject, c.detail))),
        modules=tuple(modules),
    )


def _same_package(old: BundleView | None, new: BundleView, change: ModuleChange) -> bool:
    """A module that moves from one package to another is judged by both."""
    packages = {
        rego_package(side.modules[change.path])
        for side in (old, new)
        if side is not None and change.path in side.modules
    }
    return packages == {change.package}


_PACKAGE = re.compile(r"^package\s+([A-Za-z0-9_.\[\]\"]+)", re.MULTILINE)
_RULE_HEAD = re.compile(r"^(?:default\s+)?([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)")
_NOT_RULES = ("package", "import")


def rego_package(module: bytes) -> str:
    """The package a module declares (``nexus.tools``), or ``?`` if it declares none."""
    match = _PACKAGE.search(module.decode("utf-8", "replace"))
    return match.group(1) if match else "?"


def rego_rules(module: bytes) -> dict[str, str]:
    """Each rule name of ``module`` → the text of every definition of it, in order.

    A rule starts at a line in column 0 that is not a comment, ``package``,
    ``import`` or a closing bracket, and runs to the next one; the comments
    just above it (its METADATA) belong to it.
    """
    lines = module.decode("utf-8", "replace").splitlines()
    starts: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        if not line or line[0] in " \t#}])" or line.startswith(_NOT_RULES):
            continue
        match = _RULE_HEAD.match(line)
        if match:
            starts.append((number, match.group(1)))
    rules: dict[str, str] = {}
    for i, (start, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(lines)
        first = start
        while first > 0 and lines[first - 1].startswith("#"):
            first -= 1
        body = "\n".join(lines[first:end]).rstrip()
        rules[name] = f"{rules[name]}\n{body}" if name in rules else body
    return rules


def _module_change(path: str, old: bytes | None, new: bytes | None) -> ModuleChange | None:
    if old == new:
        return None
    package = rego_package(new if new is not None else old or b"")
    rules_old = rego_rules(old) if old is not None else {}
    rules_new = rego_rules(new) if new is not None else {}
    text = "".join(
        difflib.unified_diff(
            (old or b"").decode("utf-8", "replace").splitlines(keepends=True),
            (new or b"").decode("utf-8", "replace").splitlines(keepends=True),
            fromfile=f"a/{path}" if old is not None else "/dev/null",
            tofile=f"b/{path}" if new is not None else "/dev/null",
        )
    )
    if len(text) > MAX_MODULE_DIFF_CHARS:
        text = text[:MAX_MODULE_DIFF_CHARS] + "\n… (diff cut short)\n"
    status: Literal["added", "removed", "changed"] = (
        "added" if old is None else "removed" if new is None else "changed"
    )
    return ModuleChange(
        path=path,
        package=package,
        status=status,
        rules_added=tuple(sorted(rules_new.keys() - rules_old.keys())),
        rules_removed=tuple(sorted(rules_old.keys() - rules_new.keys())),
        rules_changed=tuple(
            sorted(k for k in rules_old.keys() & rules_new.keys() if rules_old[k] != rules_new[k])
        ),
        diff=text,
    )
