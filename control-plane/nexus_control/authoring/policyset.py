"""Merges a bundle's spec documents into one cross-checked policy set.

Each kind may be split over several files; ids are unique across all of them.
Every reference (a binding's role, a budget's model, a rollout's variants) is
resolved here, and every problem is reported with the place it was written,
all at once. A :class:`PolicySet` that exists is consistent: the compiler
does not check again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from nexus_control.authoring.failover import Failover, check_failover
from nexus_control.authoring.loader import BundleSources, Problem, SpecDocument, SpecError
from nexus_control.authoring.ratelimits import check_rate_limits
from nexus_control.authoring.slos import check_slos
from nexus_control.authoring.spec import (
    DEFAULT_APPROVAL_TTL_S,
    ROUTE_PERMISSIONS,
    ApprovalTtlSpec,
    Binding,
    Capability,
    DataClass,
    Flag,
    IdentitySpec,
    Issuer,
    Model,
    ModelsSpec,
    Prompt,
    PromptsSpec,
    RateLimit,
    RbacSpec,
    RecordSigner,
    Region,
    RegionsSpec,
    RetentionRule,
    RetentionSpec,
    RiskLevel,
    Role,
    RolloutsSpec,
    Tenant,
    TenantRetention,
    TenantsSpec,
    Tool,
    ToolsSpec,
)
from nexus_control.authoring.traffic import check_quality

__all__ = ["MAX_JWKS_BYTES", "WEIGHT_TOTAL", "ApiKeyGrant", "PolicySet", "resolve"]

WEIGHT_TOTAL = 100
MAX_JWKS_BYTES = 256 * 1024


@dataclass(frozen=True)
class ApiKeyGrant:
    key_id: str
    sha256: str
    tenant: str
    feature: str | None = None


@dataclass(frozen=True)
class PolicySet:
    """Every spec of a bundle, merged by id and cross-checked."""

    name: str
    policy_dir: Path
    regions: dict[str, Region]
    tenants: dict[str, Tenant]
    models: dict[str, Model]
    roles: dict[str, Role]
    bindings: tuple[Binding, ...]
    api_keys: dict[str, ApiKeyGrant]
    """By SHA-256 of the key."""
    issuers: dict[str, tuple[Issuer, str]]
    record_signers: dict[str, tuple[RecordSigner, str]]
    """By issuer URL: the issuer and its JWKS as compact JSON."""
    tools: dict[str, Tool]
    approval_ttl_s: dict[RiskLevel, int]
    """Per risk level, the longest an approval may live (exp - iat)."""
    prompts: dict[str, Prompt]
    data_classes: dict[str, DataClass]
    retention_defaults: dict[str, RetentionRule]
    retention: dict[tuple[str, str], TenantRetention]
    flags: dict[str, Flag]
    rate_limits: tuple[RateLimit, ...] = ()
    """Sorted by id."""
    capabilities: tuple[Capability, ...] = ()
    """The SLOs specs' capabilities, sorted by name."""
    failover: Failover = dataclasses.field(default_factory=Failover)
    """Providers and region priorities (see `nexus_control.authoring.failover`)."""


def resolve(sources: BundleSources) -> PolicySet:
    """Merge and cross-check ``sources``; raise SpecError listing every problem."""
    return _Resolver(sources).run()


class _Resolver:
    def __init__(self, sources: BundleSources) -> None:
        self.sources = sources
        self.problems: list[Problem] = []

    def report(self, doc: SpecDocument, message: str, *key: str | int) -> None:
        self.problems.append(doc.problem(message, *key))

    def run(self) -> PolicySet:
        regions = self._unique(RegionsSpec, "regions", "region", lambda s: s.regions)
        tenants = self._unique(TenantsSpec, "tenants", "tenant", lambda s: s.tenants)
        models = self._unique(ModelsSpec, "models", "model", lambda s: s.models)
        roles = self._unique(RbacSpec, "roles", "role", lambda s: s.roles)
        tools = self._unique(ToolsSpec, "tools", "tool", lambda s: s.tools)
        prompts = self._unique(PromptsSpec, "prompts", "prompt", lambda s: s.prompts)
        classes = self._unique(RetentionSpec, "dataClasses", "data class", lambda s: s.data_classes)
        flags = self._unique(RolloutsSpec, "flags", "rollout flag", lambda s: s.flags)

        if not tenants:
            self.problems.append(
                self.sources.bundle.problem("the bundle defines no tenants (kind Tenants)")
            )
        self._check_tenants(tenants, regions, models)
        self._check_tools(tools)
        approval_ttl_s = self._approval_ttl()
        self._check_roles(tools)
        bindings, api_keys = self._check_bindings(tenants, roles)
        issuers = self._check_issuers(tenants)
        record_signers = self._check_record_signers(tenants)
        self._check_prompts()
        defaults, retention = self._check_retention(tenants, classes)
        self._check_flags(tenants, models, prompts)
        rate_limits = check_rate_limits(self.sources, tenants, tools, self.problems)
        capabilities = check_slos(self.sources, tools, self.problems)
        check_quality(self.sources, self.problems)
        failover = check_failover(self.sources, regions, models, self.problems)

        if self.problems:
            raise SpecError(self.problems)
        return PolicySet(
            name=self.sources.name,
            policy_dir=self.sources.policy_dir,
            regions={k: v for k, (_, v) in regions.items()},
            tenants={k: v for k, (_, v) in tenants.items()},
            models={k: v for k, (_, v) in models.items()},
            roles={k: v for k, (_, v) in roles.items()},
            bindings=tuple(bindings),
            api_keys=api_keys,
            issuers=issuers,
            record_signers=record_signers,
            tools={k: v for k, (_, v) in tools.items()},
            approval_ttl_s=approval_ttl_s,
            prompts={k: v for k, (_, v) in prompts.items()},
            data_classes={k: v for k, (_, v) in classes.items()},
            retention_defaults=defaults,
            retention=retention,
            flags={k: v for k, (_, v) in flags.items()},
            rate_limits=rate_limits,
            capabilities=capabilities,
            failover=failover,
        )

    # -- ids ---------------------------------------------------------------------

    def _unique(
        self, kind: type[Any], field: str, noun: str, items: Any
    ) -> dict[str, tuple[SpecDocument, Any]]:
        """Index a kind's items by id across all its files; report duplicates."""
        seen: dict[str, tuple[SpecDocument, Any, int]] = {}
        for doc, spec in self.sources.of_kind(kind):
            for i, item in enumerate(items(spec)):
                if item.id in seen:
                    first_doc, _, first_i = seen[item.id]
                    file, line, _ = first_doc.at(field, first_i, "id")
                    self.report(
                        doc,
                        f"duplicate {noun} id {item.id!r} (first at {file}:{line})",
                        field,
                        i,
                        "id",
                    )
                    continue
                seen[item.id] = (doc, item, i)
        return {k: (doc, item) for k, (doc, item, _) in seen.items()}

    def _located(self, kind: type[Any], field: str) -> Iterable[tuple[SpecDocument, int, Any]]:
        for doc, spec in self.sources.of_kind(kind):
            for i, item in enumerate(getattr(spec, field)):
                yield doc, i, item

    # -- concerns ----------------------------------------------------------------

    def _check_tenants(
        self,
        tenants: dict[str, tuple[SpecDocument, Tenant]],
        regions: dict[str, tuple[SpecDocument, Region]],
        models: dict[str, tuple[SpecDocument, Model]],
    ) -> None:
        jurisdictions = {region.jurisdiction for _, region in regions.values()}
        for doc, i, tenant in self._located(TenantsSpec, "tenants"):
            indexed = tenants.get(tenant.id)
            if indexed is None or indexed[1] is not tenant:
                continue  # a duplicate, reported already
            if tenant.jurisdiction is not None and tenant.jurisdiction not in jurisdictions:
                self.report(
                    doc,
                    f"tenant {tenant.id!r}: no region has jurisdiction {tenant.jurisdiction!r} "
                    f"(known: {', '.join(sorted(jurisdictions)) or 'none'})",
                    "tenants",
                    i,
                    "jurisdiction",
                )
            budget = tenant.budget
            for model, cap in budget.per_model.items():
                if model not in models:
                    self.report(
                        doc,
                        f"tenant {tenant.id!r}: unknown model {model!r} in perModel",
                        "tenants",
                        i,
                        "budget",
                        "perModel",
                        model,
                    )
                if cap > budget.monthly_cap_usd:
                    self.report(
                        doc,
                        f"tenant {tenant.id!r}: perModel cap for {model!r} ({cap}) exceeds "
                        f"the monthly cap ({budget.monthly_cap_usd})",
                        "tenants",
                        i,
                        "budget",
                        "perModel",
                        model,
                    )
            for feature, cap in budget.per_feature.items():
                if cap > budget.monthly_cap_usd:
                    self.report(
                        doc,
                        f"tenant {tenant.id!r}: perFeature cap for {feature!r} ({cap}) exceeds "
                        f"the monthly cap ({budget.monthly_cap_usd})",
                        "tenants",
                        i,
                        "budget",
                        "perFeature",
                        feature,
                    )
            request_cap = budget.max_request_usd
            if request_cap is not None and request_cap > budget.monthly_cap_usd:
                self.report(
                    doc,
                    f"tenant {tenant.id!r}: maxRequestUsd ({request_cap}) exceeds "
                    f"the monthly cap ({budget.monthly_cap_usd})",
                    "tenants",
                    i,
                    "budget",
                    "maxRequestUsd",
                )

    def _approval_ttl(self) -> dict[RiskLevel, int]:
        """The approval lifetimes per risk level: defaults, or the one Tools spec that sets them."""
        found: list[tuple[SpecDocument, ApprovalTtlSpec]] = [
            (doc, spec.approval_ttl_seconds)
            for doc, spec in self.sources.of_kind(ToolsSpec)
            if spec.approval_ttl_seconds is not None
        ]
        for doc, _ in found[1:]:
            file, line, _ = found[0][0].at("approvalTtlSeconds")
            self.report(
                doc,
                f"approvalTtlSeconds is set in two Tools documents (first at {file}:{line})",
                "approvalTtlSeconds",
            )
        if not found:
            return dict(DEFAULT_APPROVAL_TTL_S)
        return found[0][1].resolved()

    def _check_tools(self, tools: dict[str, tuple[SpecDocument, Tool]]) -> None:
        for doc, tool in tools.values():
            i = self._index_of(doc, "tools", tool)
            if tool.risk.rank >= RiskLevel.HIGH.rank and tool.requires_approval is False:
                self.report(
                    doc,
                    f"tool {tool.id!r}: {tool.risk} risk tools always need a human approval; "
                    "remove requiresApproval or set it to true",
                    "tools",
                    i,
                    "requiresApproval",
                )
            try:
                validator_for(tool.arguments).check_schema(tool.arguments)
            except SchemaError as exc:
                where = "/".join(str(p) for p in exc.path) or "(root)"
                self.report(
                    doc,
                    f"tool {tool.id!r}: arguments is not a valid JSON Schema at {where}: "
                    f"{exc.message}",
                    "tools",
                    i,
                    "arguments",
                    *exc.path,
                )
                continue
            if tool.arguments.get("type") != "object":
                self.report(
                    doc,
                    f"tool {tool.id!r}: arguments schema must have type: object",
                    "tools",
                    i,
                    "arguments",
                )

    def _check_roles(self, tools: dict[str, tuple[SpecDocument, Tool]]) -> None:
        known = set(ROUTE_PERMISSIONS) | {tool.permission for _, tool in tools.values()}
        for doc, i, role in self._located(RbacSpec, "roles"):
            seen: set[str] = set()
            for j, permission in enumerate(role.permissions):
                if permission in seen:
                    self.report(
                        doc,
                        f"role {role.id!r}: permission {permission!r} listed twice",
                        "roles",
                        i,
                        "permissions",
                        j,
                    )
                seen.add(permission)
                if permission not in known:
                    self.report(
                        doc,
                        f"role {role.id!r}: unknown permission {permission!r} "
                        "(neither a route permission nor a tool's permission)",
                        "roles",
                        i,
                        "permissions",
                        j,
                    )

    def _check_bindings(
        self,
        tenants: dict[str, tuple[SpecDocument, Tenant]],
        roles: dict[str, tuple[SpecDocument, Role]],
    ) -> tuple[list[Binding], dict[str, ApiKeyGrant]]:
        bindings: list[Binding] = []
        granted: dict[tuple[str, str, str], str] = {}
        keys_by_hash: dict[str, ApiKeyGrant] = {}
        keys_by_id: dict[str, ApiKeyGrant] = {}
        for doc, i, binding in self._located(RbacSpec, "bindings"):
            ok = True
            if binding.tenant not in tenants:
                self.report(doc, f"unknown tenant {binding.tenant!r}", "bindings", i, "tenant")
                ok = False
            if binding.role not in roles:
                self.report(doc, f"unknown role {binding.role!r}", "bindings", i, "role")
                ok = False
            subjects = [
                *((f"user:{u}", ("users", j)) for j, u in enumerate(binding.users)),
                *((f"service:{s}", ("services", j)) for j, s in enumerate(binding.services)),
                *((f"apikey:{k.id}", ("apiKeys", j)) for j, k in enumerate(binding.api_keys)),
            ]
            if not subjects:
                self.report(doc, "binding names no users, services or apiKeys", "bindings", i)
                ok = False
            file = doc.display
            for subject, (field, j) in subjects:
                key = (binding.tenant, binding.role, subject)
                if key in granted:
                    self.report(
                        doc,
                        f"overlapping binding: {subject} already has role {binding.role!r} in "
                        f"tenant {binding.tenant!r} (at {granted[key]})",
                        "bindings",
                        i,
                        field,
                        j,
                    )
                    ok = False
                else:
                    _, line, _ = doc.at("bindings", i, field, j)
                    granted[key] = f"{file}:{line}"
            for j, api_key in enumerate(binding.api_keys):
                grant = ApiKeyGrant(api_key.id, api_key.sha256, binding.tenant, api_key.feature)
                other = keys_by_hash.get(api_key.sha256) or keys_by_id.get(api_key.id)
                if other is not None and other != grant:
                    self.report(
                        doc,
                        f"API key {api_key.id!r} conflicts with key {other.key_id!r} of tenant "
                        f"{other.tenant!r}: a key has one id, one hash, one tenant and one "
                        "feature",
                        "bindings",
                        i,
                        "apiKeys",
                        j,
                    )
                    ok = False
                    continue
                keys_by_hash[api_key.sha256] = grant
                keys_by_id[api_key.id] = grant
            if ok:
                bindings.append(binding)
        return bindings, keys_by_hash

    def _check_issuers(
        self, tenants: dict[str, tuple[SpecDocument, Tenant]]
    ) -> dict[str, tuple[Issuer, str]]:
        out: dict[str, tuple[Issuer, str]] = {}
        for doc, i, issuer in self._located(IdentitySpec, "issuers"):
            jwks = self._check_signer(doc, i, "issuers", issuer, tenants, out)
            if jwks is not None:
                out[issuer.issuer] = (issuer, jwks)
        return out

    def _check_record_signers(
        self, tenants: dict[str, tuple[SpecDocument, Tenant]]
    ) -> dict[str, tuple[RecordSigner, str]]:
        out: dict[str, tuple[RecordSigner, str]] = {}
        for doc, i, signer in self._located(IdentitySpec, "record_signers"):
            jwks = self._check_signer(doc, i, "recordSigners", signer, tenants, out)
            if jwks is not None:
                out[signer.issuer] = (signer, jwks)
        return out

    def _check_signer(
        self,
        doc: SpecDocument,
        i: int,
        section: str,
        signer: Issuer | RecordSigner,
        tenants: dict[str, tuple[SpecDocument, Tenant]],
        seen: Mapping[str, object],
    ) -> str | None:
        """The signer's JWKS as compact JSON, or None after reporting what is wrong."""
        for j, tenant in enumerate(signer.tenants):
            if tenant not in tenants:
                self.report(doc, f"unknown tenant {tenant!r}", section, i, "tenants", j)
        if signer.issuer in seen:
            self.report(doc, f"duplicate issuer {signer.issuer!r}", section, i, "issuer")
            return None
        if (signer.jwks is None) == (signer.jwks_file is None):
            self.report(doc, "an issuer needs exactly one of jwks and jwksFile", section, i)
            return None
        jwks = signer.jwks
        field = "jwks"
        if signer.jwks_file is not None:
            field = "jwksFile"
            jwks = self._read_jwks(doc, doc.path.parent / signer.jwks_file, (section, i, field))
            if jwks is None:
                return None
        error = _jwks_problem(jwks)
        if error:
            self.report(doc, f"issuer {signer.issuer!r}: {error}", section, i, field)
            return None
        return json.dumps(jwks, sort_keys=True, separators=(",", ":"))

    def _read_jwks(
        self, doc: SpecDocument, path: Path, key: tuple[str | int, ...]
    ) -> dict[str, Any] | None:
        try:
            if path.stat().st_size > MAX_JWKS_BYTES:
                self.report(doc, f"{path}: JWKS file is larger than 256 KiB", *key)
                return None
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self.report(doc, f"cannot read JWKS file {path}: {exc}", *key)
            return None
        if not isinstance(data, dict):
            self.report(doc, f"{path}: a JWKS file holds a JSON object", *key)
            return None
        return data

    def _check_prompts(self) -> None:
        for doc, i, prompt in self._located(PromptsSpec, "prompts"):
            versions: dict[str, str] = {}
            for j, version in enumerate(prompt.versions):
                if version.version in versions:
                    self.report(
                        doc,
                        f"prompt {prompt.id!r}: version {version.version!r} listed twice",
                        "prompts",
                        i,
                        "versions",
                        j,
                        "version",
                    )
                versions[version.version] = version.status
            status = versions.get(prompt.default_version)
            if status is None:
                self.report(
                    doc,
                    f"prompt {prompt.id!r}: defaultVersion {prompt.default_version!r} is not "
                    "one of its versions",
                    "prompts",
                    i,
                    "defaultVersion",
                )
            elif status == "retired":
                self.report(
                    doc,
                    f"prompt {prompt.id!r}: defaultVersion {prompt.default_version!r} is retired",
                    "prompts",
                    i,
                    "defaultVersion",
                )

    def _check_retention(
        self,
        tenants: dict[str, tuple[SpecDocument, Tenant]],
        classes: dict[str, tuple[SpecDocument, DataClass]],
    ) -> tuple[dict[str, RetentionRule], dict[tuple[str, str], TenantRetention]]:
        defaults: dict[str, RetentionRule] = {}
        for doc, i, rule in self._located(RetentionSpec, "defaults"):
            if rule.data_class not in classes:
                self.report(
                    doc, f"unknown data class {rule.data_class!r}", "defaults", i, "dataClass"
                )
            elif rule.data_class in defaults:
                self.report(
                    doc,
                    f"data class {rule.data_class!r} has two defaults",
                    "defaults",
                    i,
                    "dataClass",
                )
            else:
                defaults[rule.data_class] = rule
        for class_id, (doc, _) in classes.items():
            if class_id not in defaults:
                i = self._index_of(doc, "data_classes", classes[class_id][1])
                self.report(
                    doc, f"data class {class_id!r} has no default retention", "dataClasses", i, "id"
                )
        policies: dict[tuple[str, str], TenantRetention] = {}
        for doc, i, policy in self._located(RetentionSpec, "policies"):
            ok = True
            if policy.tenant not in tenants:
                self.report(doc, f"unknown tenant {policy.tenant!r}", "policies", i, "tenant")
                ok = False
            if policy.data_class not in classes:
                self.report(
                    doc, f"unknown data class {policy.data_class!r}", "policies", i, "dataClass"
                )
                ok = False
            key = (policy.tenant, policy.data_class)
            if key in policies:
                self.report(
                    doc,
                    f"tenant {policy.tenant!r} has two retention policies "
                    f"for {policy.data_class!r}",
                    "policies",
                    i,
                )
                ok = False
            if ok:
                policies[key] = policy
        return defaults, policies

    def _check_flags(
        self,
        tenants: dict[str, tuple[SpecDocument, Tenant]],
        models: dict[str, tuple[SpecDocument, Model]],
        prompts: dict[str, tuple[SpecDocument, Prompt]],
    ) -> None:
        routed: dict[tuple[str, str], str] = {}
        for doc, i, flag in self._located(RolloutsSpec, "flags"):
            target = (flag.target, flag.key)
            if target in routed and routed[target] != flag.id:
                self.report(
                    doc,
                    f"flag {flag.id!r}: {flag.target} {flag.key!r} is already routed by flag "
                    f"{routed[target]!r}",
                    "flags",
                    i,
                    "key",
                )
            routed.setdefault(target, flag.id)

            total = sum(v.weight for v in flag.variants)
            if total != WEIGHT_TOTAL:
                self.report(
                    doc,
                    f"flag {flag.id!r}: variant weights sum to {total}, not 100",
                    "flags",
                    i,
                    "variants",
                )
            names: set[str] = set()
            for j, variant in enumerate(flag.variants):
                if variant.name in names:
                    self.report(
                        doc,
                        f"flag {flag.id!r}: variant {variant.name!r} listed twice",
                        "flags",
                        i,
                        "variants",
                        j,
                        "name",
                    )
                names.add(variant.name)

            valid, what = self._flag_targets(flag, models, prompts, doc, i)
            if valid is None:
                continue
            for j, variant in enumerate(flag.variants):
                if variant.name not in valid:
                    self.report(
                        doc,
                        f"flag {flag.id!r}: variant {variant.name!r} is not {what}",
                        "flags",
                        i,
                        "variants",
                        j,
                        "name",
                    )
            if flag.baseline not in valid:
                self.report(
                    doc,
                    f"flag {flag.id!r}: baseline {flag.baseline!r} is not {what}",
                    "flags",
                    i,
                    "baseline",
                )
            overridden: set[str] = set()
            for j, override in enumerate(flag.overrides):
                if override.tenant not in tenants:
                    self.report(
                        doc,
                        f"flag {flag.id!r}: unknown tenant {override.tenant!r}",
                        "flags",
                        i,
                        "overrides",
                        j,
                        "tenant",
                    )
                if override.tenant in overridden:
                    self.report(
                        doc,
                        f"flag {flag.id!r}: tenant {override.tenant!r} overridden twice",
                        "flags",
                        i,
                        "overrides",
                        j,
                        "tenant",
                    )
                overridden.add(override.tenant)
                if override.variant not in names | {flag.baseline}:
                    self.report(
                        doc,
                        f"flag {flag.id!r}: override variant {override.variant!r} is neither a "
                        "variant nor the baseline",
                        "flags",
                        i,
                        "overrides",
                        j,
                        "variant",
                    )

    def _flag_targets(
        self,
        flag: Flag,
        models: dict[str, tuple[SpecDocument, Model]],
        prompts: dict[str, tuple[SpecDocument, Prompt]],
        doc: SpecDocument,
        i: int,
    ) -> tuple[set[str] | None, str]:
        if flag.target == "model":
            return set(models), "a known model"
        entry = prompts.get(flag.key)
        if entry is None:
            self.report(doc, f"flag {flag.id!r}: unknown prompt {flag.key!r}", "flags", i, "key")
            return None, ""
        live = {v.version for v in entry[1].versions if v.status != "retired"}
        return live, f"a live version of prompt {flag.key!r}"

    @staticmethod
    def _index_of(doc: SpecDocument, field: str, item: Any) -> int:
        items = getattr(doc.spec, field)
        for i, candidate in enumerate(items):
            if candidate is item:
                return i
        return 0


def _jwks_problem(jwks: Any) -> str | None:
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        return "jwks must be an object with a non-empty 'keys' list"
    for n, key in enumerate(keys):
        if not isinstance(key, dict) or "kty" not in key:
            return f"jwks key {n} has no 'kty'"
        if any(private in key for private in ("d", "p", "q", "dp", "dq", "qi", "k")):
            return (
                f"jwks key {n} contains private or symmetric key material; publish public keys only"
            )
    return None
