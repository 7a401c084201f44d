"""Witnessing and tiles: checkpoint → 2 of 3 cosignatures, proofs from tiles, the Go verifier.

``python -m tests.bench.bench_audit_witness [--quick] [--leaves 1000000] [--rounds 200]``

1. Witnessing: three witnesses as real processes on loopback (two
   ``nexus-policy witness serve``, one transparency-dev omniwitness), quorum 2
   of 3. Each round appends a small batch, signs a checkpoint and submits it
   with a consistency proof to all three in parallel; the figure is the time
   from the submission until the second valid cosignature is in (p50, p99).
2. Tiles: the tree grown to ``--leaves`` (compact leaves, in bulk), then
   inclusion proofs of random leaves computed from tiles alone
   (`nexus_audit.tiles.TileHasher` over `read_tile`, a cold tile cache per
   proof: three tile reads at 1M leaves), p50/p99.
3. The independent verifier (tests/tlogverify, golang.org/x/mod/sumdb/tlog)
   over HTTP: 1,000 random leaves proven from the served tiles and entry
   bundles, then 1,000 inclusion proofs and 10 successive consistency proofs
   made by the log, all checked.

SQLite by default (``--database-url`` for PostgreSQL). Every process listens on
127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nexus_audit import merkle, tiles
from nexus_audit.catalog import load_catalogs
from nexus_audit.policy import TlogPolicy
from nexus_audit.witness.client import WitnessPool
from nexus_dataplane.process import free_port
from nexus_runtime.server import ServerThread
from tests.bench.bench_audit import Row, _grow, _judged, _percentile
from tests.fixtures.gotools import tlogverify_binary
from tests.fixtures.witnesses import nexus_witness, omniwitness
from tests.unit.audit.audit_app import create_app
from tests.unit.audit.harness import LOG_KEY, open_log
from tests.unit.audit.opa_events import events, gzip_batch

WITNESS_TARGET_MS = 2000.0
TILE_PROOF_TARGET_MS = 2.0
console = Console(highlight=False, width=150 if not sys.stdout.isatty() else None)


def main(argv: list[str] | None = None) -> None:
    quick = os.environ.get("NEXUS_BENCH_QUICK") == "1"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", default=quick)
    parser.add_argument("--leaves", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--database-url")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    leaves = args.leaves or (50_000 if args.quick else 1_000_000)
    rounds = args.rounds or (50 if args.quick else 200)
    with tempfile.TemporaryDirectory(prefix="nexus-bench-witness-") as work:
        rows = run(Path(work), leaves, rounds, args.database_url)
    table = Table(title="Audit log: witnesses and tiles", title_justify="left")
    for column in ("figure", "value", "target", "", "how / note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        style = {"PASS": "green", "MISS": "bold red"}.get(row.verdict, "")
        verdict = f"[{style}]{row.verdict}[/{style}]" if style else row.verdict
        table.add_row(row.name, row.value, row.target, verdict, row.note)
    console.print(table)


def run(work: Path, leaves: int, rounds: int, database_url: str | None) -> list[Row]:
    url = database_url or f"sqlite:///{work}/audit.db"
    now = datetime.now(UTC)
    log = open_log(url, load_catalogs(), lambda: datetime.now(UTC), journal=work / "j.jsonl")
    witnesses = [
        nexus_witness(work / "w1", "w1.bench.example/w", LOG_KEY.verifier),
        nexus_witness(work / "w2", "w2.bench.example/w", LOG_KEY.verifier),
        omniwitness(work / "w3", "w3.bench.example/w", LOG_KEY.verifier),
    ]
    rows: list[Row] = []
    try:
        for witness in witnesses:
            witness.start()
        lines = [f"log {LOG_KEY.verifier}"]
        lines += [f"witness w{i} {w.key} {w.url}" for i, w in enumerate(witnesses, start=1)]
        lines += ["group main 2 w1 w2 w3", "quorum main"]
        log.witnesses = WitnessPool(TlogPolicy.parse("\n".join(lines) + "\n"), log.db)
        quorum_ms = []
        for round_number in range(rounds):
            start = now + timedelta(seconds=round_number)
            log.ingest_upload(gzip_batch(events(10, start=start)), "gzip")
            result = log.witness(log.checkpoint())
            if not result.quorum_met or result.quorum_seconds is None:
                raise RuntimeError(f"round {round_number}: no quorum: {result.outcomes}")
            quorum_ms.append(result.quorum_seconds * 1000)
        rows.append(
            _judged(
                "witnessing p99: checkpoint → 2 of 3 cosignatures",
                _percentile(quorum_ms, 99),
                "ms",
                "<",
                WITNESS_TARGET_MS,
                f"{rounds} checkpoints, each with a consistency proof to 2 nexus witnesses and "
                f"omniwitness in parallel; p50 {_percentile(quorum_ms, 50):.1f} ms",
            )
        )

        started = time.perf_counter()
        _grow(log, leaves)
        signed = log.checkpoint()
        rows.append(
            Row(
                "tree for the tile figures",
                f"{signed.size:,} leaves",
                note=f"grown in bulk in {time.perf_counter() - started:.0f} s",
            )
        )
        rng = random.Random(3)
        with log.db.session() as session:

            def fetch(tile: tiles.Tile) -> bytes:
                return tiles.read_tile(session, tile, signed.size)

            warm = tiles.TileHasher(fetch, signed.size)
            for label, fresh in (("cold", True), ("warm", False)):
                latencies = []
                for _ in range(2000):
                    index = rng.randrange(signed.size)
                    began = time.perf_counter()
                    hasher = tiles.TileHasher(fetch, signed.size) if fresh else warm
                    merkle.inclusion_proof(index, signed.size, hasher)
                    latencies.append((time.perf_counter() - began) * 1000)
                rows.append(
                    _judged(
                        f"inclusion proof from tiles at {signed.size:,} leaves, p99, {label}",
                        _percentile(latencies, 99),
                        "ms",
                        "<",
                        TILE_PROOF_TARGET_MS,
                        (
                            "2,000 random leaves, every tile read from the database per proof"
                            if fresh
                            else "2,000 random leaves, tiles kept as served (immutable, LRU of "
                            "4,096)"
                        )
                        + f"; p50 {_percentile(latencies, 50):.2f} ms",
                    )
                )

        with ServerThread(create_app(log), "127.0.0.1", free_port()) as server:
            began = time.perf_counter()
            out = _go(
                "tiles", "-url", f"{server.url}/v1/audit/log", "-key", str(LOG_KEY.verifier),
                "-token", "compliance-token", "-sample", "1000",
            )  # fmt: skip
            tiles_s = time.perf_counter() - began
        proofs = _proofs_input(log, rng)
        began = time.perf_counter()
        checked = _go("proofs", "-key", str(LOG_KEY.verifier), stdin=json.dumps(proofs))
        proofs_s = time.perf_counter() - began
        rows.append(
            Row(
                "independent Go verifier (x/mod/sumdb/tlog)",
                f"{out['inclusion_checked']} + {checked['inclusion_checked']} inclusion, "
                f"{checked['consistency_checked']} consistency",
                verdict="PASS",
                note=f"{out['inclusion_checked']} leaves proven from served tiles and entry "
                f"bundles at {out['size']:,} leaves in {tiles_s:.1f} s ({out['requests']} GETs); "
                f"1,000 inclusion and 10 successive consistency proofs of the log's checked in "
                f"{proofs_s:.1f} s",
            )
        )
    finally:
        for witness in witnesses:
            witness.stop()
        log.close()
    return rows


def _proofs_input(log: object, rng: random.Random) -> dict[str, object]:
    from nexus_audit.service import AuditLog

    assert isinstance(log, AuditLog)
    checkpoints = [log.checkpoint()]
    for round_number in range(10):
        log.ingest_upload(
            gzip_batch(events(5, start=datetime.now(UTC) + timedelta(minutes=round_number))),
            "gzip",
        )
        checkpoints.append(log.checkpoint())
    latest = checkpoints[-1]
    inclusion = []
    for index in rng.sample(range(latest.size), 1000):
        proof = log.inclusion_proof(index=index, size=latest.size)
        inclusion.append(
            {
                "checkpoint": latest.note,
                "index": index,
                "entry": base64.b64encode(log.leaf(index=index).entry).decode(),
                "proof": [base64.b64encode(h).decode() for h in proof.hashes],
            }
        )
    consistency = [
        {
            "old": old.note,
            "new": new.note,
            "proof": [
                base64.b64encode(h).decode()
                for h in log.consistency_proof(old.size, new.size).hashes
            ],
        }
        for old, new in itertools.pairwise(checkpoints)
    ]
    return {"inclusion": inclusion, "consistency": consistency}


def _go(*args: str, stdin: str | None = None) -> dict[str, object]:
    out = subprocess.run(
        [str(tlogverify_binary()), *args], input=stdin, capture_output=True, text=True,
        timeout=1800, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"tlogverify {args[0]} failed: {out.stderr}")
    result: dict[str, object] = json.loads(out.stdout)
    return result


if __name__ == "__main__":
    main()
