"""Console page time on PostgreSQL: every page, 1M decision leaves, 10k tenants (issue 15).

``python -m tests.bench --only console [--quick]``

1. A throwaway PostgreSQL holds the control plane's database and the audit
   log's (two databases, as a co-located deployment has them). The control
   plane publishes the generated 10k-tenant bundle (``--quick``: 1k) and
   serves its app with the audit log on loopback, as ``nexus-policy serve``
   does.
2. The audit log is grown to 1M decision leaves (``--quick``: 50k) through
   ``nexus_audit.storage.append``, each with its payload sealed by the log's
   own vault, as intake writes them: spread over the tenants, the last 30
   days, chat / embeddings / tool routes, five tools, both outcomes, five
   deny rules and four control sets. The decision search index is then built
   (``AuditLog.index_decisions`` until caught up) and a checkpoint signed;
   both times are reported.
3. Spend counters for every tenant over the month (the embedded spend store)
   feed the budgets page; a few enforcers are enrolled for the fleet page.
4. Compliance and operator sessions are opened through the sign-in form;
   each page is then requested ``REQUESTS`` times over one kept-alive
   connection with random filters and ids, after a short warm-up. The time is
   the client's, end to end on loopback (session check, queries, template),
   so it bounds the server time from above. Targets: p99 < 300 ms per page,
   < 100 ms for a decision by id.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import psycopg

from nexus_audit import storage
from nexus_audit.entry import commitment, decision_entry
from nexus_audit.payloads import PayloadToSeal
from nexus_audit.service import AuditLog
from nexus_contract.wire import GATEWAY_ROUTES
from nexus_control.access.tokens import Role, create_token
from nexus_control.budgets.spend import InProcessSpendStore, Usage, day_of, period_of
from tests.bench.common import Context, Figure, figure, percentile, report
from tests.bench.generate import tenant_id
from tests.bench.plane import BenchPlane
from tests.fixtures.console import CONSOLE, SESSION_COOKIE

TITLE = "Console page time on PostgreSQL (issue 15)"
PAGE_TARGET_MS = 300.0
LOOKUP_TARGET_MS = 100.0
REQUESTS = 50
ID_SEARCH = "decision search by id (answers 303 to the decision)"
WARMUP = 5
DAYS = 30
CHUNK = 10_000
ENFORCERS = 24
ROUTES = ("/v1/chat/completions", "/v1/embeddings")
TOOLS = ("search_web", "read_file", "send_email", "sql_query", "create_ticket")
RULES = (
    "nexus.rbac.permission_denied",
    "nexus.budget.hard_cap",
    "nexus.ratelimit.exceeded",
    "nexus.dlp.pii_blocked",
    "nexus.tools.not_allowed",
)
CONTROL_SETS = (
    ("SOC2:CC6.1", "ISO27001:A.5.15"),
    ("SOC2:CC6.1", "ISO27001:A.5.17", "ISO27001:A.8.5"),
    ("SOC2:CC6.1", "ISO27001:A.8.3"),
    ("SOC2:CC6.3", "ISO27001:A.5.15", "ISO27001:A.8.2"),
)
CONTROLS = sorted({c for s in CONTROL_SETS for c in s})
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet")
FEATURES = ("support-chat", "search", "summaries")


def run(ctx: Context) -> list[Figure]:
    leaves = 50_000 if ctx.quick else 1_000_000
    tenants = ctx.main_tenants
    built = ctx.built(tenants)
    workdir = ctx.workdir / "console"
    workdir.mkdir(parents=True, exist_ok=True)
    spend = InProcessSpendStore()
    figures: list[Figure] = []
    with _postgres() as server_url:
        control_url, audit_url = _database(server_url, "control"), _database(server_url, "audit")
        plane = _ConsolePlane(
            workdir=workdir,
            keys=ctx.keys,
            opa=ctx.opa,
            database_url=control_url,
            plain={},
            spend=spend,
            enforcers=0,
            audit_database_url=audit_url,
            first=built,
        )
        try:
            # The log is grown and indexed before the app (and its index loop) starts, so
            # the indexing time is the indexer's alone.
            plane.start_audit()
            assert plane.audit is not None
            names = [tenant_id(n) for n in range(tenants)]
            started = time.perf_counter()
            grown = _grow(plane.audit, leaves, names)
            grow_s = time.perf_counter() - started
            ctx.console.print(f"  grown: {grown:,} leaves in {grow_s:.0f} s")
            started = time.perf_counter()
            indexed = _index(plane.audit)
            index_s = time.perf_counter() - started
            ctx.console.print(f"  indexed: {indexed:,} leaves in {index_s:.0f} s")
            plane.start()
            assert plane.plane is not None
            with plane.plane.db.session() as session:
                plane.tokens["compliance"], _ = create_token(
                    session, name="bench-compliance", role=Role.COMPLIANCE
                )
            for n in range(ENFORCERS):
                plane.enrol(f"{plane.region}-bench-{n}")
            spent = _fill_spend(spend, names)
            ctx.console.print(f"  spend: {spent:,} usage records over {len(names):,} tenants")
            signed = plane.audit.checkpoint()
            figures.append(
                figure(
                    "console",
                    "audit log grown",
                    grown / grow_s,
                    "leaves/s",
                    note=f"{signed.size:,} decision leaves over {len(names):,} tenants and "
                    f"{DAYS} days, payloads sealed, storage.append in {grow_s:.0f} s",
                )
            )
            figures.append(
                figure(
                    "console",
                    "decision search index built",
                    index_s,
                    "s",
                    note=f"AuditLog.index_decisions until caught up: {indexed:,} leaves, "
                    f"{indexed / index_s:,.0f} leaves/s",
                )
            )
            figures += _pages(plane, signed.size, names, ctx.console.print)
        finally:
            plane.stop()
    report(ctx.console, TITLE, figures)
    return figures


@dataclass
class _ConsolePlane(BenchPlane):
    """The bench plane, whose audit log may be opened (and filled) before the app starts."""

    def start_audit(self) -> None:
        if self.audit is None:
            super().start_audit()


# --- the data ------------------------------------------------------------------------------


def _fill_spend(spend: InProcessSpendStore, tenants: list[str]) -> int:
    """A month of spend: every tenant on a handful of days, by model, feature and endpoint."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = max(1, (now - first).days + 1)
    count = 0
    for tenant in tenants:
        for _ in range(5):
            moment = first + timedelta(days=rng.randrange(days))
            spend.record(
                Usage(
                    request_id=str(uuid.uuid4()),
                    tenant=tenant,
                    model=rng.choice(MODELS),
                    feature=rng.choice(FEATURES),
                    tokens=rng.randrange(100, 5000),
                    cost_usd=round(rng.uniform(0.01, 4.0), 4),
                    period=period_of(moment),
                    day=day_of(moment),
                    endpoint=rng.choice(GATEWAY_ROUTES),
                )
            )
            count += 1
    return count


def _route(n: int) -> str:
    kind = n % 5
    if kind < 2:
        return ROUTES[kind]
    return f"/v1/tools/{TOOLS[(n // 5) % len(TOOLS)]}:invoke"


def _grow(log: AuditLog, leaves: int, tenants: list[str]) -> int:
    """Append decision leaves (entry + sealed payload) until the tree has ``leaves``."""
    end = datetime.now(UTC)
    start = end - timedelta(days=DAYS)
    step = (end - start) / max(1, leaves)
    rng = random.Random(3)
    added = 0
    while (size := log.size()) < leaves:
        batch: list[storage.NewLeaf] = []
        payloads: list[tuple[str, bytes, bytes, datetime]] = []
        for n in range(size, min(size + CHUNK, leaves)):
            at = start + step * n
            tenant = tenants[rng.randrange(len(tenants))]
            controls = CONTROL_SETS[n % len(CONTROL_SETS)]
            route = _route(n)
            allowed = rng.random() < 0.7
            reasons = (
                []
                if allowed
                else [
                    {
                        "rule": RULES[rng.randrange(len(RULES))],
                        "message": f"apikey:{tenant}-prod-1 is refused",
                        "controls": list(controls),
                    }
                ]
            )
            payload = orjson.dumps(
                {
                    "input": {
                        "attributes": {
                            "request": {
                                "http": {
                                    "method": "POST",
                                    "path": route,
                                    "headers": {"x-nexus-tenant": tenant},
                                }
                            }
                        }
                    },
                    "result": {
                        "allowed": allowed,
                        "http_status": 200 if allowed else 403,
                        "reasons": reasons,
                    },
                }
            )
            salt = os.urandom(16)
            decision_id = str(uuid.UUID(int=rng.getrandbits(128)))
            entry = decision_entry(
                decision_id=decision_id,
                time=at,
                tenant=tenant,
                region="eu-west-1",
                enforcer=f"eu-west-1-bench-{n % ENFORCERS}",
                bundles={"nexus": "1b74bc1b0c4a"},
                path="nexus/envoy/authz/decision",
                method="POST",
                http_path=route,
                allowed=allowed,
                http_status=200 if allowed else 403,
                controls=controls,
                payload_commitment=commitment(salt, payload),
            )
            batch.append(
                storage.NewLeaf(
                    entry=entry,
                    kind="decision",
                    time=at,
                    decision_id=decision_id,
                    tenant=tenant,
                    allowed=allowed,
                    controls=controls,
                )
            )
            payloads.append((tenant, payload, salt, at))
        with log.db.session() as session:
            appended = storage.append(session, batch, now=end)
            sealed = [
                PayloadToSeal(index, tenant, None, payload, salt, at)
                for index, (tenant, payload, salt, at) in zip(
                    appended.indexes, payloads, strict=True
                )
                if index is not None
            ]
            log.vault.seal(session, sealed, now=end, keys_epoch=appended.keys_epoch)
        added += len(sealed)
    return added


def _index(log: AuditLog) -> int:
    indexed = 0
    while read := log.index_decisions():
        indexed += read
    return indexed


# --- the pages -----------------------------------------------------------------------------


@contextlib.contextmanager
def _sign_in(url: str, token: str) -> Iterator[httpx.Client]:
    """A session through the sign-in form, as a browser opens one (tests.fixtures.console)."""
    with httpx.Client(base_url=url, timeout=60) as client:
        yield _signed(client, token)


def _signed(client: httpx.Client, token: str) -> httpx.Client:
    form = client.get(f"{CONSOLE}/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    if nonce is None:
        raise RuntimeError(f"no sign-in form: {form.status_code}")
    answer = client.post(f"{CONSOLE}/login", data={"token": token, "nonce": nonce.group(1)})
    if answer.status_code != 303 or not client.cookies.get(SESSION_COOKIE):
        raise RuntimeError(f"sign-in refused: {answer.status_code} {answer.text[:200]}")
    return client


def _sample_ids(log: AuditLog, size: int, count: int) -> list[str]:
    rng = random.Random(11)
    with log.db.engine.connect() as connection:
        return [
            str(
                connection.exec_driver_sql(
                    "SELECT decision_id FROM leaves WHERE leaf_index = %(i)s",
                    {"i": rng.randrange(size)},
                ).scalar_one()
            )
            for _ in range(count)
        ]


def _pages(
    plane: BenchPlane, size: int, tenants: list[str], say: Callable[[str], None]
) -> list[Figure]:
    assert plane.audit is not None
    rng = random.Random(5)
    ids = _sample_ids(plane.audit, size, REQUESTS + WARMUP)
    today = datetime.now(UTC).date()

    def day(back: int) -> str:
        return (today - timedelta(days=back)).isoformat()

    def since_until() -> dict[str, str]:
        first = rng.randrange(1, DAYS)
        return {"since": day(first), "until": day(max(0, first - rng.randrange(1, 8)))}

    searches: dict[str, Callable[[], dict[str, str]]] = {
        "decisions, no filter": dict,
        "decisions by tenant": lambda: {"tenant": rng.choice(tenants)},
        "decisions by outcome": lambda: {"outcome": rng.choice(("allowed", "denied"))},
        "decisions by route": lambda: {"route": rng.choice(ROUTES)},
        "decisions by tool": lambda: {"tool": rng.choice(TOOLS)},
        "decisions by rule": lambda: {"rule": rng.choice(RULES)},
        "decisions by control": lambda: {"control": rng.choice(CONTROLS)},
        "decisions by time range": since_until,
        "decisions, tenant + denied + control": lambda: {
            "tenant": rng.choice(tenants),
            "outcome": "denied",
            "control": rng.choice(CONTROLS),
        },
    }
    assert plane.plane is not None
    rollout_ids = [r.id for r in plane.plane.rollouts.recent(100, diff=False)]
    control = plane.plane
    changed = {rid: control.rollouts.diff_page(rid).summary.counts for rid in rollout_ids}

    def later_page() -> tuple[str, dict[str, str]]:
        """A page deep into one effect's changes (or all of them), as the pager's links ask."""
        rid = rng.choice(rollout_ids)
        effect = rng.choice([None, *changed[rid]])
        count = sum(changed[rid].values()) if effect is None else changed[rid][effect]
        query = {"after": str(rng.randrange(max(1, count)))}
        return f"/rollouts/{rid}", query | ({"effect": effect.value} if effect else {})

    compliance_pages: dict[str, tuple[Callable[[], tuple[str, dict[str, str]]], float]] = {
        "controls list (SOC2, 30 days)": (
            lambda: ("/controls", {"framework": "SOC2", "since": day(DAYS), "until": day(0)}),
            PAGE_TARGET_MS,
        ),
        "controls list (ISO27001, default period)": (
            lambda: ("/controls", {"framework": "ISO27001"}),
            PAGE_TARGET_MS,
        ),
        "one control (SOC2:CC6.1, 30 days)": (
            lambda: ("/controls/SOC2:CC6.1", {"since": day(DAYS), "until": day(0)}),
            PAGE_TARGET_MS,
        ),
        "one control (random, 7 days)": (
            lambda: (f"/controls/{rng.choice(CONTROLS)}", {"since": day(7), "until": day(0)}),
            PAGE_TARGET_MS,
        ),
        **{name: (_search_page(make), PAGE_TARGET_MS) for name, make in searches.items()},
        ID_SEARCH: (
            lambda: ("/decisions", {"decision_id": rng.choice(ids)}),
            LOOKUP_TARGET_MS,
        ),
        "decision detail by id": (
            lambda: (f"/decisions/{rng.choice(ids)}", {}),
            LOOKUP_TARGET_MS,
        ),
        "log health": (lambda: ("/log", {}), PAGE_TARGET_MS),
    }
    operator_pages: dict[str, tuple[Callable[[], tuple[str, dict[str, str]]], float]] = {
        "rollouts": (lambda: ("/rollouts", {}), PAGE_TARGET_MS),
        "one rollout": (lambda: (f"/rollouts/{rng.choice(rollout_ids)}", {}), PAGE_TARGET_MS),
        "one rollout, a later page of its diff": (later_page, PAGE_TARGET_MS),
        "fleet": (lambda: ("/fleet", {}), PAGE_TARGET_MS),
        "budgets (all tenants)": (lambda: ("/budgets", {}), PAGE_TARGET_MS),
        "budgets (one tenant)": (
            lambda: ("/budgets", {"tenant": rng.choice(tenants)}),
            PAGE_TARGET_MS,
        ),
    }
    figures: list[Figure] = []
    for role, pages in (("compliance", compliance_pages), ("operator", operator_pages)):
        with _sign_in(plane.url, plane.tokens[role]) as client:
            for name, (make, target) in pages.items():
                timed = _time_page(client, name, make, target, role)
                say(f"  {timed.name}: {timed.value:.1f} ms ({timed.note.split(';')[0]})")
                figures.append(timed)
    return figures


def _search_page(
    make: Callable[[], dict[str, str]],
) -> Callable[[], tuple[str, dict[str, str]]]:
    return lambda: ("/decisions", make())


def _time_page(
    client: httpx.Client,
    name: str,
    make: Callable[[], tuple[str, dict[str, str]]],
    target: float,
    role: str,
) -> Figure:
    latencies: list[float] = []
    sizes: list[int] = []
    for n in range(WARMUP + REQUESTS):
        path, params = make()
        began = time.perf_counter()
        answer = client.get(CONSOLE + path, params=params)
        elapsed = (time.perf_counter() - began) * 1000
        # A search by id alone answers with a redirect to the decision (the product's way).
        if answer.status_code != (303 if name == ID_SEARCH else 200):
            raise RuntimeError(
                f"{name}: GET {path} {params} answered {answer.status_code}: {answer.text[:300]}"
            )
        if n >= WARMUP:
            latencies.append(elapsed)
            sizes.append(len(answer.content))
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return figure(
        "console",
        f"{name} p99",
        p99,
        "ms",
        target=("<", target),
        note=f"p50 {p50:.1f} ms, max {max(latencies):.1f} ms; {REQUESTS} GETs as {role}, "
        f"~{sum(sizes) // len(sizes) // 1024} KiB each",
    )


# --- PostgreSQL ----------------------------------------------------------------------------


@contextlib.contextmanager
def _postgres() -> Iterator[str]:
    from tests.fixtures.servers import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _database(server_url: str, name: str) -> str:
    database = f"bench_console_{name}_{uuid.uuid4().hex[:8]}"
    plain = server_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {database}")  # our own name: letters and hex
    return server_url.rsplit("/", 1)[0] + f"/{database}"
