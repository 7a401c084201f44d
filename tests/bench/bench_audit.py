"""Audit log benchmark: intake into PostgreSQL, proof latency and full verify at 1M leaves.

``python -m tests.bench.bench_audit [--postgres-url URL] [--leaves 1000000] [--quick]``

1. Intake: realistic decision-log uploads (events shaped exactly as OPA's
   decision_logs plugin sends them: masked input, the full decision result,
   rule labels, metrics), gzip-compressed in batches of ``--batch-size``
   events, each appended in one transaction. Measured twice: calling the
   service directly (one uploader), and through HTTP (the audit router on
   uvicorn, as OPA reaches it) with ``--uploaders`` concurrent clients, as
   several enforcers upload at once. Bodies are compressed before the clock
   starts: compressing is the enforcer's work.
2. The tree is then grown to ``--leaves`` leaves through the storage layer
   in bulk (compact decision entries with controls, no payloads), and a
   checkpoint is signed.
3. Inclusion-proof latency: ``AuditLog.inclusion_proof(decision_id=...)``
   for random decisions, the whole service path (id lookup, latest
   checkpoint opened with the log key, proof hashes fetched), percentiles.
4. Full verify: ``verify_log`` in a fresh process (so its peak RSS is its
   own): every leaf rehashed, every stored node and checkpoint checked.

PostgreSQL is the one given, or a throwaway server started here
(tests.fixtures.servers.PostgresServer); a fresh database is created either way.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

from nexus_audit import storage
from nexus_audit.catalog import load_catalogs
from nexus_audit.database import AuditDatabase
from nexus_audit.entry import decision_entry
from nexus_audit.envelope import LocalKeyWrapper
from nexus_audit.facts import StaticFacts
from nexus_audit.intake import IntakeLimits, Uploader
from nexus_audit.journal import CheckpointJournal
from nexus_audit.note import Signer
from nexus_audit.service import AuditLog
from nexus_dataplane.process import free_port, wait_for_port

INTAKE_TARGET_PER_S = 10_000
PROOF_TARGET_MS = 5.0
ORIGIN = "bench.nexus.local/audit"
TENANTS = ("acme", "globex", "initech", "hooli", "umbrella")
CONTROL_SETS = (
    ("SOC2:CC6.1", "ISO27001:A.5.15"),
    ("SOC2:CC6.1", "ISO27001:A.5.17", "ISO27001:A.8.5"),
    ("SOC2:CC6.1", "ISO27001:A.8.3"),
    ("SOC2:CC6.3", "ISO27001:A.5.15", "ISO27001:A.8.2"),
)

UPLOADER = Uploader("eu-west-1", "eu-west-1-a", "eu-west-1-a")

console = Console(highlight=False, width=150 if not sys.stdout.isatty() else None)


@dataclass(frozen=True)
class Row:
    name: str
    value: str
    target: str = ""
    verdict: str = "-"
    note: str = ""


def main(argv: list[str] | None = None) -> None:
    quick = os.environ.get("NEXUS_BENCH_QUICK") == "1"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url", help="SQLAlchemy URL of a PostgreSQL server to use")
    parser.add_argument("--quick", action="store_true", default=quick, help="small sizes")
    parser.add_argument("--leaves", type=int, help="tree size for proofs and verify")
    parser.add_argument("--intake-events", type=int, help="decisions sent through intake")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per upload")
    parser.add_argument("--uploaders", type=int, default=2, help="concurrent HTTP uploaders")
    parser.add_argument("--proofs", type=int, default=2000, help="inclusion proofs to time")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    leaves = args.leaves or (50_000 if args.quick else 1_000_000)
    intake_events = args.intake_events or (10_000 if args.quick else 100_000)

    with _postgres(args.postgres_url) as server_url:
        url = _fresh_database(server_url)
        console.print(f"PostgreSQL database {url.rsplit('@', 1)[-1]}")
        rows = run(url, leaves, intake_events, args.batch_size, args.uploaders, args.proofs)
    table = Table(title="Audit log benchmark", title_justify="left")
    for column in ("figure", "value", "target", "", "how / note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        style = {"PASS": "green", "MISS": "bold red"}.get(row.verdict, "")
        verdict = f"[{style}]{row.verdict}[/{style}]" if style else row.verdict
        table.add_row(row.name, row.value, row.target, verdict, row.note)
    console.print(table)
    from tests.bench import bench_audit_witness

    bench_audit_witness.main(["--quick"] if args.quick else [])


def run(
    url: str, leaves: int, intake_events: int, batch_size: int, uploaders: int, proofs: int
) -> list[Row]:
    catalogs = load_catalogs()
    db = AuditDatabase(url)
    db.migrate()
    signer = Signer.generate(ORIGIN)
    master_key = os.urandom(32)
    journal = Path(tempfile.mkdtemp(prefix="nexus-bench-journal-")) / "checkpoints.jsonl"
    log = AuditLog(
        db,
        signer,
        LocalKeyWrapper(master_key),
        catalogs,
        journal=CheckpointJournal(journal),
        checkpoint_every_leaves=1000,
        checkpoint_every_s=5.0,
        limits=IntakeLimits(32 * 1024 * 1024, 100_000),
        facts=StaticFacts(frozenset(TENANTS), {}),
    )
    rows: list[Row] = []
    try:
        bodies = _uploads(intake_events, batch_size)
        raw_bytes = sum(len(body) for body in bodies)
        direct = bodies[: len(bodies) // 2]
        over_http = bodies[len(bodies) // 2 :]

        started = time.perf_counter()
        for body in direct:
            log.ingest_upload(body, "gzip", UPLOADER)
        elapsed = time.perf_counter() - started
        rate = len(direct) * batch_size / elapsed
        rows.append(
            _judged(
                "intake, service call, 1 uploader",
                rate,
                "decisions/s",
                ">=",
                INTAKE_TARGET_PER_S,
                f"{len(direct)} gzip uploads of {batch_size} events "
                f"(~{raw_bytes // len(bodies) // 1024} KiB each compressed), "
                "one transaction per upload, payloads encrypted",
            )
        )

        rate, latencies = _http_intake(url, signer, master_key, over_http, uploaders, journal)
        rows.append(
            _judged(
                f"intake over HTTP, {uploaders} uploaders",
                rate,
                "decisions/s",
                ">=",
                INTAKE_TARGET_PER_S,
                f"{len(over_http)} uploads via POST /v1/opa/logs, uvicorn in its own process; "
                f"upload latency "
                f"p50 {_percentile(latencies, 50):.0f} ms, p99 {_percentile(latencies, 99):.0f} ms",
            )
        )

        started = time.perf_counter()
        grown = _grow(log, leaves)
        build_s = time.perf_counter() - started
        signed = log.checkpoint()
        rows.append(
            Row(
                "tree built in bulk",
                f"{signed.size:,} leaves",
                note=f"{grown:,} compact leaves appended by storage.append in "
                f"{build_s:.1f} s ({grown / build_s:,.0f} leaves/s, COPY)",
            )
        )

        latency = _proof_latency(log, signed.size, proofs)
        rows.append(
            _judged(
                f"inclusion proof p50 at {signed.size:,} leaves",
                _percentile(latency, 50),
                "ms",
                "<",
                PROOF_TARGET_MS,
                f"{len(latency)} proofs by random decision id, service path "
                f"(lookup, checkpoint opened, {len(_any_proof(log))} hashes fetched)",
            )
        )
        rows.append(
            _judged(
                "inclusion proof p99",
                _percentile(latency, 99),
                "ms",
                "<",
                PROOF_TARGET_MS,
                f"max {max(latency):.2f} ms",
            )
        )

        verify_s, peak_mb, start_mb = _verify_in_child(url, str(signer.verifier))
        rows.append(
            Row(
                f"full verify at {signed.size:,} leaves",
                f"{verify_s:.1f} s",
                note=f"verify_log in a fresh process: {signed.size / verify_s:,.0f} leaves/s, "
                f"peak RSS {peak_mb:.0f} MB ({start_mb:.0f} MB before verifying)",
            )
        )
    finally:
        log.close()
    return rows


# --- workload ------------------------------------------------------------------


def _opa_event(n: int, at: datetime) -> dict[str, Any]:
    """An event as OPA's decision_logs plugin uploads it for a gateway decision."""
    tenant = TENANTS[n % len(TENANTS)]
    controls = list(CONTROL_SETS[n % len(CONTROL_SETS)])
    allowed = n % 3 == 0
    reasons = (
        []
        if allowed
        else [
            {
                "rule": "nexus.rbac.permission_denied",
                "message": f'apikey:{tenant}-prod-1 lacks permission "chat:completions"',
                "controls": controls,
            }
        ]
    )
    headers = {
        "authorization": "sha256:3608bca1e44ea6c4",
        "content-type": "application/json",
        "x-nexus-tenant": tenant,
        "x-nexus-model": "gpt-4o",
        "x-nexus-feature": "support-chat",
        "x-request-id": str(uuid.UUID(int=n)),
    }
    if n % 4 == 0:
        headers["x-nexus-subject"] = f"user-{n % 5000}"
    return {
        "labels": {
            "id": "0f6b7c4e-1d6e-4c36-9d5b-3c1f4f5ad001",
            "region": "eu-west-1",
            "enforcer": "eu-west-1-a",
            "version": "1.22.2",
        },
        "decision_id": str(uuid.uuid4()),
        "bundles": {
            "nexus": {
                "revision": "1b74bc1b0c4a1e14506d8cb6cb443f1ff4804e411137a782b12cf1d11f97e0d4"
            },
            "nexus-state": {"revision": "state-2026-11-25T12:00:00Z"},
        },
        "path": "nexus/envoy/authz/decision",
        "input": {
            "attributes": {
                "request": {
                    "http": {
                        "id": str(1000 + n),
                        "method": "POST",
                        "path": "/v1/chat/completions",
                        "host": "gateway.nexus.local",
                        "scheme": "http",
                        "protocol": "HTTP/1.1",
                        "headers": headers,
                    }
                },
                "source": {
                    "address": {"socketAddress": {"address": "10.0.3.7", "portValue": 51234}}
                },
                "destination": {
                    "address": {"socketAddress": {"address": "10.0.1.2", "portValue": 8080}}
                },
            },
            "parsed_path": ["v1", "chat", "completions"],
            "parsed_query": {},
            "truncated_body": False,
            "version": {"encoding": "protojson", "ext_authz": "v3"},
        },
        "result": {
            "allowed": allowed,
            "http_status": 200 if allowed else 403,
            "headers": {"x-nexus-route-model": "gpt-4o"}
            if allowed
            else {"content-type": "application/json"},
            "response_headers_to_add": {},
            "request_headers_to_remove": ["authorization", "x-nexus-approval"] if allowed else [],
            "body": "" if allowed else json.dumps({"error": "denied", "reasons": reasons}),
            "reasons": reasons,
        },
        "rule_labels": [{"controls": controls}],
        "requested_by": "",
        "timestamp": (at + timedelta(microseconds=n * 137)).isoformat().replace("+00:00", "Z"),
        "metrics": {
            "timer_rego_query_eval_ns": 91234 + n % 1000,
            "timer_server_handler_ns": 201234 + n % 1000,
        },
        "req_id": n,
        "masked": ["/input/attributes/request/http/headers/authorization"],
    }


def _uploads(events: int, batch_size: int) -> list[bytes]:
    at = datetime.now(UTC)
    batches = []
    for start in range(0, events, batch_size):
        batch = [_opa_event(n, at) for n in range(start, min(start + batch_size, events))]
        batches.append(gzip.compress(json.dumps(batch).encode(), compresslevel=6))
    return batches


_SERVER_CHILD = """
import os, sys
from dataclasses import dataclass
from pathlib import Path
import uvicorn
from nexus_audit.api import create_audit_app
from nexus_audit.catalog import load_catalogs
from nexus_audit.database import AuditDatabase
from nexus_audit.envelope import LocalKeyWrapper
from nexus_audit.facts import StaticFacts
from nexus_audit.intake import IntakeLimits
from nexus_audit.journal import CheckpointJournal
from nexus_audit.note import Signer
from nexus_audit.service import AuditLog
from nexus_audit.uploads import UploadGate

log = AuditLog(
    AuditDatabase(os.environ["BENCH_AUDIT_URL"]),
    Signer.parse(os.environ["BENCH_AUDIT_SIGNER"]),
    LocalKeyWrapper(bytes.fromhex(os.environ["BENCH_AUDIT_MASTER"])),
    load_catalogs(),
    journal=CheckpointJournal(Path(os.environ["BENCH_AUDIT_JOURNAL"])),
    checkpoint_every_leaves=1000,
    checkpoint_every_s=5.0,
    limits=IntakeLimits(32 * 1024 * 1024, 100_000),
    facts=StaticFacts(frozenset(os.environ["BENCH_AUDIT_TENANTS"].split(",")), {}),
    uploads=UploadGate(64, 64),
)


@dataclass(frozen=True)
class Enforcer:
    name: str = "bench"
    region: str = "eu-west-1"
    enforcer_id: str = "eu-west-1-a"


async def authorize(request, roles):
    return Enforcer()


async def authenticate(token):
    return Enforcer()


uvicorn.run(create_audit_app(log, authorize, authenticate), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="warning", access_log=False)
"""


def _http_intake(
    url: str,
    signer: Signer,
    master_key: bytes,
    bodies: list[bytes],
    uploaders: int,
    journal: Path,
) -> tuple[float, list[float]]:
    """Upload ``bodies`` over HTTP to the audit router served by uvicorn in its own process.

    The server is a separate process, as in production, so the uploaders
    (standing in for OPA) do not share its interpreter.
    """
    port = free_port()
    env = {
        **os.environ,
        "BENCH_AUDIT_URL": url,
        "BENCH_AUDIT_SIGNER": signer.private_key_string(),
        "BENCH_AUDIT_MASTER": master_key.hex(),
        "BENCH_AUDIT_JOURNAL": str(journal),
        "BENCH_AUDIT_TENANTS": ",".join(TENANTS),
    }
    server = subprocess.Popen([sys.executable, "-c", _SERVER_CHILD, str(port)], env=env)
    latencies: list[float] = []
    accepted = [0]
    lock = threading.Lock()
    queue = list(reversed(bodies))

    def upload() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                began = time.perf_counter()
                response = client.post(
                    "/v1/opa/logs",
                    content=body,
                    headers={"content-encoding": "gzip", "x-nexus-enforcer": "eu-west-1-a"},
                )
                response.raise_for_status()
                with lock:
                    latencies.append((time.perf_counter() - began) * 1000)
                    accepted[0] += response.json()["accepted"]

    try:
        deadline = time.monotonic() + 60
        while not wait_for_port("127.0.0.1", port, 0.5):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the audit server did not start")
        threads = [threading.Thread(target=upload) for _ in range(uploaders)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    return accepted[0] / elapsed, latencies


def _grow(log: AuditLog, leaves: int, chunk: int = 20_000) -> int:
    """Append compact decision leaves until the tree has ``leaves``; return how many."""
    at = datetime.now(UTC)
    added = 0
    while (size := log.size()) < leaves:
        batch = []
        for n in range(size, min(size + chunk, leaves)):
            controls = CONTROL_SETS[n % len(CONTROL_SETS)]
            decision_id = str(uuid.UUID(int=n + (1 << 100)))
            allowed = n % 3 == 0
            entry = decision_entry(
                decision_id=decision_id,
                time=at,
                tenant=TENANTS[n % len(TENANTS)],
                region="eu-west-1",
                enforcer="eu-west-1-a",
                bundles={"nexus": "1b74bc1b0c4a"},
                path="nexus/envoy/authz/decision",
                method="POST",
                http_path="/v1/chat/completions",
                allowed=allowed,
                http_status=200 if allowed else 403,
                controls=controls,
                payload_commitment=f"{n:064x}",
            )
            batch.append(
                storage.NewLeaf(
                    entry=entry,
                    kind="decision",
                    time=at,
                    decision_id=decision_id,
                    tenant=TENANTS[n % len(TENANTS)],
                    allowed=allowed,
                    controls=controls,
                )
            )
        with log.db.session() as session:
            appended = storage.append(session, batch, now=at)
        added += appended.accepted
    return added


def _proof_latency(log: AuditLog, size: int, count: int) -> list[float]:
    rng = random.Random(1)
    with log.db.engine.connect() as connection:
        ids = [
            connection.exec_driver_sql(
                "SELECT decision_id FROM leaves WHERE leaf_index = %(i)s",
                {"i": rng.randrange(size)},
            ).scalar_one()
            for _ in range(count)
        ]
    for decision_id in ids[:50]:  # warm the pool and the caches
        log.inclusion_proof(decision_id=decision_id)
    latencies = []
    for decision_id in ids:
        began = time.perf_counter()
        log.inclusion_proof(decision_id=decision_id)
        latencies.append((time.perf_counter() - began) * 1000)
    return latencies


def _any_proof(log: AuditLog) -> tuple[bytes, ...]:
    return log.inclusion_proof(index=0).hashes


# VmHWM, not getrusage's ru_maxrss: that keeps the parent's high-water mark across exec.
_VERIFY_CHILD = """
import json, sys
from nexus_audit.database import AuditDatabase
from nexus_audit.note import Verifier
from nexus_audit.verify import verify_log

def rss_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

db = AuditDatabase(sys.argv[1])
before = rss_kb("VmRSS")
report = verify_log(db, Verifier.parse(sys.argv[2]))
print(json.dumps({"seconds": report.seconds, "size": report.size,
                  "rss_kb": rss_kb("VmHWM"), "before_kb": before}))
"""


def _verify_in_child(url: str, verifier: str) -> tuple[float, float, float]:
    out = subprocess.run(
        [sys.executable, "-c", _VERIFY_CHILD, url, verifier],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), result["rss_kb"] / 1024, result["before_kb"] / 1024


# --- PostgreSQL ----------------------------------------------------------------------


@contextmanager
def _postgres(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fixtures.servers import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _fresh_database(url: str) -> str:
    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")  # name is ours: hex only
    return url.rsplit("/", 1)[0] + f"/{name}"


# --- reporting -----------------------------------------------------------------------


def _percentile(values: list[float], percent: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))
    return ordered[position]


def _judged(name: str, value: float, unit: str, op: str, bound: float, note: str) -> Row:
    ok = value >= bound if op == ">=" else value < bound
    text = f"{value:,.0f} {unit}" if unit != "ms" else f"{value:.2f} ms"
    target = f"{op} {bound:,.0f} {unit}" if unit != "ms" else f"{op} {bound:g} ms"
    return Row(name, text, target, "PASS" if ok else "MISS", note)


if __name__ == "__main__":
    main()
