"""Generates a bundle directory with N tenants, for the build and enforcement benchmarks.

The shape follows ``bundles/gateway``: its regions, models, tools, prompts,
data classes, roles and rollout flags are reused as they are (identity
providers too, their tenant lists pointed at generated tenants); tenants,
custom roles, bindings, API keys, retention policies and rollout overrides
grow with N:

- tenants spread over the jurisdictions (45 % eu, 45 % us, 10 % unbound) and
  plans (50 % free, 35 % team, 15 % enterprise), each with a budget (some
  with per-model and per-feature caps), 1 % suspended;
- one custom role per 20 tenants, besides the example's five roles;
- two bindings per tenant: ``chat-user`` for 1-3 users and an API key, and an
  agent binding (``agent`` or a custom role) for a service and, for half of
  the tenants, a second API key: 1.5 keys per tenant on average;
- a retention policy for 10 % of tenants, and a rollout override for the
  enterprise tenants among every 200th.

Specs are split over files of at most ``TENANTS_PER_FILE`` tenants (the loader
refuses files over 8 MiB) and written as block YAML, the way authors write
them. Everything is derived from ``seed``: the same arguments give the same
files. API keys are stored as SHA-256 only; the plain text of any tenant's
key can be recomputed with :func:`plain_key`, and a sample of them is
returned as :class:`Credential` records for the benchmarks' requests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "bundles" / "gateway"
REGO = REPO / "rego"

API_VERSION = "policy.nexus.ai/v1"
TENANTS_PER_FILE = 5_000
TENANTS_PER_CUSTOM_ROLE = 20
SAMPLE_CREDENTIALS = 512
REUSED_FILES = ("models.yaml", "prompts.yaml", "regions.yaml", "tools.yaml")

JURISDICTIONS: tuple[tuple[str | None, float], ...] = (("eu", 0.45), ("us", 0.45), (None, 0.10))
PLANS: tuple[tuple[str, float], ...] = (("free", 0.50), ("team", 0.35), ("enterprise", 0.15))
CAP_RANGE_USD = {"free": (20, 200), "team": (1_000, 10_000), "enterprise": (10_000, 200_000)}
FEATURES = ("support-chat", "code-review", "summaries")


@dataclass(frozen=True)
class Credential:
    """A tenant's API key in plain text, with what a request for that tenant needs."""

    tenant: str
    key_id: str
    plain: str
    plan: str
    jurisdiction: str | None
    status: str
    on_hard_cap: str
    monthly_cap_usd: float


@dataclass(frozen=True)
class GeneratedBundle:
    path: Path
    tenants: int
    roles: int
    bindings: int
    api_keys: int
    users: int
    services: int
    files: int
    bytes: int
    credentials: tuple[Credential, ...]

    def pick(
        self,
        *,
        jurisdictions: tuple[str | None, ...] = ("eu", None),
        plans: tuple[str, ...] = ("team", "enterprise"),
        on_hard_cap: tuple[str, ...] = ("refuse", "disable"),
    ) -> list[Credential]:
        """Sampled active tenants' keys matching the filters, in tenant order."""
        return [
            c
            for c in self.credentials
            if c.status == "active"
            and c.jurisdiction in jurisdictions
            and c.plan in plans
            and c.on_hard_cap in on_hard_cap
        ]


def tenant_id(n: int) -> str:
    return f"t{n:06d}"


def plain_key(seed: int, tenant: str, index: int) -> str:
    """The plain text of ``tenant``'s API key number ``index`` (1 or 2)."""
    return "nx_" + hashlib.sha256(f"bench:{seed}:{tenant}:{index}".encode()).hexdigest()[:40]


def _choose(rng: random.Random, weighted: tuple[tuple[Any, float], ...]) -> Any:
    roll = rng.random()
    total = 0.0
    for value, weight in weighted:
        total += weight
        if roll < total:
            return value
    return weighted[-1][0]


@dataclass(frozen=True)
class _Tenant:
    id: str
    plan: str
    jurisdiction: str | None
    status: str
    cap: int
    soft: int
    on_hard_cap: str
    per_model: dict[str, int]
    per_feature: dict[str, int]


def _tenants(seed: int, count: int) -> Iterator[_Tenant]:
    rng = random.Random(seed)
    for n in range(1, count + 1):
        plan = _choose(rng, PLANS)
        low, high = CAP_RANGE_USD[plan]
        cap = rng.randrange(low, high + 1, 10)
        per_model: dict[str, int] = {}
        per_feature: dict[str, int] = {}
        if plan == "enterprise" and rng.random() < 0.3:
            per_model["gpt-4.1"] = max(1, cap // 4)
        if rng.random() < 0.2:
            per_feature[rng.choice(FEATURES)] = max(1, cap // 3)
        yield _Tenant(
            id=tenant_id(n),
            plan=plan,
            jurisdiction=_choose(rng, JURISDICTIONS),
            status="suspended" if rng.random() < 0.01 else "active",
            cap=cap,
            soft=rng.choice((75, 80, 85, 90)),
            on_hard_cap="refuse" if rng.random() < 0.7 else "disable",
            per_model=per_model,
            per_feature=per_feature,
        )


def _tenant_yaml(t: _Tenant) -> list[str]:
    lines = [
        f"  - id: {t.id}",
        f"    name: Tenant {t.id[1:]}",
        f"    plan: {t.plan}",
    ]
    if t.status != "active":
        lines.append(f"    status: {t.status}")
    if t.jurisdiction is not None:
        lines.append(f"    jurisdiction: {t.jurisdiction}")
    lines += [
        "    budget:",
        f"      monthlyCapUsd: {t.cap}",
        f"      softCapPercent: {t.soft}",
        f"      onHardCap: {t.on_hard_cap}",
    ]
    for name, caps in (("perModel", t.per_model), ("perFeature", t.per_feature)):
        if caps:
            lines.append(f"      {name}:")
            lines += [f"        {key}: {value}" for key, value in caps.items()]
    return lines


def _header(kind: str, comment: str) -> list[str]:
    return [f"# {comment}", f"apiVersion: {API_VERSION}", f"kind: {kind}"]


def _write(path: Path, lines: list[str]) -> int:
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return len(text.encode())


def generate(target: Path, tenants: int, *, seed: int = 1, variant: int = 0) -> GeneratedBundle:
    """Write a bundle directory with ``tenants`` tenants to ``target`` (replaced if present).

    ``variant`` changes one tenant's budget and nothing else, so two variants
    are two different revisions of the same policy (for publishing benchmarks).
    """
    if tenants < 1:
        raise ValueError("a bundle needs at least one tenant")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    size = 0
    files = 0

    for name in REUSED_FILES:
        shutil.copyfile(EXAMPLE / name, target / name)
        size += (target / name).stat().st_size
        files += 1
    identity = _identity(tenants)
    (target / "identity.yaml").write_text(identity)
    size += len(identity.encode())
    files += 1
    size += _write(
        target / "bundle.yaml",
        [
            *_header("Bundle", f"Generated by tests/bench/generate.py: {tenants} tenants."),
            "name: gateway",
            f"description: Benchmark bundle with {tenants} generated tenants.",
            f"policy: {REGO}",
        ],
    )
    files += 1

    example_rbac = yaml.safe_load((EXAMPLE / "rbac.yaml").read_text())
    base_roles: list[dict[str, Any]] = example_rbac["roles"]
    agent_permissions: list[str] = next(r for r in base_roles if r["id"] == "agent")["permissions"]
    custom_roles = max(1, tenants // TENANTS_PER_CUSTOM_ROLE)
    role_rng = random.Random(seed * 7919 + 1)
    role_lines = _header("RBAC", "Roles: the example's, plus generated custom agent roles.")
    role_lines.append("roles:")
    for role in base_roles:
        role_lines.append(f"  - id: {role['id']}")
        role_lines.append(f"    permissions: [{', '.join(role['permissions'])}]")
    for r in range(1, custom_roles + 1):
        permissions = ["chat:completions", *role_rng.sample(agent_permissions[1:], 3)]
        role_lines.append(f"  - id: custom-{r:05d}")
        role_lines.append(f"    description: Generated agent role {r}.")
        role_lines.append(f"    permissions: [{', '.join(permissions)}]")
    size += _write(target / "rbac-roles.yaml", role_lines)
    files += 1

    all_tenants = list(_tenants(seed, tenants))
    if variant:
        all_tenants[0] = dataclasses.replace(all_tenants[0], cap=all_tenants[0].cap + 10 * variant)
    stride = max(1, tenants // SAMPLE_CREDENTIALS)
    credentials: list[Credential] = []
    bindings = api_keys = users = services = 0
    binding_rng = random.Random(seed * 104729 + 3)
    retention_lines: list[str] = []
    overrides: list[str] = []

    for chunk_no, start in enumerate(range(0, tenants, TENANTS_PER_FILE), start=1):
        chunk = all_tenants[start : start + TENANTS_PER_FILE]
        tenant_lines = _header("Tenants", f"Generated tenants, part {chunk_no}.")
        tenant_lines.append("tenants:")
        rbac_lines = _header("RBAC", f"Bindings of the generated tenants, part {chunk_no}.")
        rbac_lines.append("bindings:")
        for offset, t in enumerate(chunk):
            n = start + offset
            tenant_lines += _tenant_yaml(t)
            key1 = plain_key(seed, t.id, 1)
            user_count = binding_rng.randint(1, 3)
            rbac_lines += [
                f"  - tenant: {t.id}",
                "    role: chat-user",
                "    users: ["
                + ", ".join(f"user{u}@{t.id}.example" for u in range(1, user_count + 1))
                + "]",
                "    apiKeys:",
                f"      - id: {t.id}-key-1",
                f"        sha256: {hashlib.sha256(key1.encode()).hexdigest()}",
            ]
            users += user_count
            api_keys += 1
            agent_role = (
                "agent"
                if binding_rng.random() < 0.5
                else f"custom-{binding_rng.randint(1, custom_roles):05d}"
            )
            rbac_lines += [
                f"  - tenant: {t.id}",
                f"    role: {agent_role}",
                f"    services: [{t.id}-bot]",
            ]
            services += 1
            if binding_rng.random() < 0.5:
                key2 = plain_key(seed, t.id, 2)
                rbac_lines += [
                    "    apiKeys:",
                    f"      - id: {t.id}-key-2",
                    f"        sha256: {hashlib.sha256(key2.encode()).hexdigest()}",
                ]
                api_keys += 1
            bindings += 2
            if n % stride == 0 and len(credentials) < SAMPLE_CREDENTIALS:
                credentials.append(
                    Credential(
                        tenant=t.id,
                        key_id=f"{t.id}-key-1",
                        plain=key1,
                        plan=t.plan,
                        jurisdiction=t.jurisdiction,
                        status=t.status,
                        on_hard_cap=t.on_hard_cap,
                        monthly_cap_usd=float(t.cap),
                    )
                )
            if n % 10 == 3:
                retention_lines += [
                    f"  - tenant: {t.id}",
                    "    dataClass: chat-history",
                    f"    days: {binding_rng.choice((30, 90, 180, 730))}",
                    f"    delete: {binding_rng.choice(('soft', 'hard'))}",
                ]
            if n % 200 == 7 and t.plan == "enterprise":
                overrides += [f"      - tenant: {t.id}", "        variant: gpt-4.1"]
        size += _write(target / f"tenants-{chunk_no:03d}.yaml", tenant_lines)
        size += _write(target / f"rbac-bindings-{chunk_no:03d}.yaml", rbac_lines)
        files += 2

    size += _write(target / "retention.yaml", _retention(retention_lines))
    size += _write(target / "rollouts.yaml", _rollouts(overrides))
    files += 2
    return GeneratedBundle(
        path=target,
        tenants=tenants,
        roles=len(base_roles) + custom_roles,
        bindings=bindings,
        api_keys=api_keys,
        users=users,
        services=services,
        files=files,
        bytes=size,
        credentials=tuple(credentials),
    )


def _identity(tenants: int) -> str:
    """The example's identity providers; any tenant list names generated tenants instead."""
    example = yaml.safe_load((EXAMPLE / "identity.yaml").read_text())
    for n, issuer in enumerate(example.get("issuers", []), start=1):
        if "tenants" in issuer:
            issuer["tenants"] = [tenant_id(min(n, tenants))]
    for signer in example.get("recordSigners", []):
        if "tenants" in signer:
            signer["tenants"] = [
                tenant_id(n) for n in range(1, min(len(signer["tenants"]), tenants) + 1)
            ]
    return "# The example's identity providers.\n" + yaml.safe_dump(example, sort_keys=False)


def _retention(policies: list[str]) -> list[str]:
    """The example's data classes and defaults, with the generated tenants' policies."""
    example = yaml.safe_load((EXAMPLE / "retention.yaml").read_text())
    lines = _header("Retention", "The example's data classes and defaults; generated policies.")
    lines.append("dataClasses:")
    for cls in example["dataClasses"]:
        lines.append(f"  - id: {cls['id']}")
    lines.append("defaults:")
    for rule in example["defaults"]:
        lines += [
            f"  - dataClass: {rule['dataClass']}",
            f"    days: {rule['days']}",
            f"    delete: {rule['delete']}",
        ]
    if policies:
        lines.append("policies:")
        lines += policies
    return lines


def _rollouts(overrides: list[str]) -> list[str]:
    """The example's flags, with overrides naming generated tenants instead of the example's."""
    example = yaml.safe_load((EXAMPLE / "rollouts.yaml").read_text())
    lines = _header("Rollouts", "The example's flags; overrides name generated tenants.")
    lines.append("flags:")
    for flag in example["flags"]:
        lines += [
            f"  - id: {flag['id']}",
            f"    target: {flag['target']}",
            f"    key: {flag['key']}",
            f'    baseline: "{flag["baseline"]}"',
            f"    canaryPercent: {flag.get('canaryPercent', 0)}",
            f"    sticky: {flag.get('sticky', 'tenant')}",
            f"    killSwitch: {'true' if flag.get('killSwitch') else 'false'}",
            "    variants:",
        ]
        for v in flag["variants"]:
            lines += [f'      - name: "{v["name"]}"', f"        weight: {v['weight']}"]
        if flag["id"] == "chat-default-2026-11" and overrides:
            lines.append("    overrides:")
            lines += overrides
    return lines


def main() -> None:
    """``python -m tests.bench.generate N DIR``: write a generated bundle for inspection."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("tenants", type=int)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--variant", type=int, default=0)
    args = parser.parse_args()
    made = generate(args.directory, args.tenants, seed=args.seed, variant=args.variant)
    print(
        f"{made.path}: {made.tenants} tenants, {made.roles} roles, {made.bindings} bindings, "
        f"{made.api_keys} API keys, {made.files} files, {made.bytes / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    main()
