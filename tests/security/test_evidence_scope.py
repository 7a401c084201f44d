"""Attack 7: evidence that leaks other tenants' payloads and salts, or holds a period in memory."""

from __future__ import annotations

import io
import tarfile
import tracemalloc
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from nexus_audit.evidence import export_archive, verify_archive
from nexus_audit.service import AuditLog
from tests.security.conftest import Api, AuditFactory
from tests.unit.audit.harness import LOG_KEY
from tests.unit.audit.opa_events import T0, decision_event, events, gzip_batch

SINCE, UNTIL = T0 - timedelta(days=1), T0 + timedelta(days=30)


def _populate(log: AuditLog) -> None:
    batch = [decision_event(tenant="acme", time=T0 + timedelta(seconds=i)) for i in range(6)]
    batch += [decision_event(tenant="globex", time=T0 + timedelta(seconds=i)) for i in range(4)]
    log.ingest_upload(gzip_batch(batch), "gzip")


def _records(archive: Path | bytes) -> list[dict[str, object]]:
    data = archive.read_bytes() if isinstance(archive, Path) else archive
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = tar.extractfile("records.jsonl")
        assert member is not None
        return [orjson.loads(line) for line in member.read().splitlines()]


def test_an_export_for_one_tenant_holds_no_other_tenants_payloads_or_salts(
    audit: AuditLog, tmp_path: Path
) -> None:
    _populate(audit)
    out = tmp_path / "acme.tar.gz"
    summary = export_archive(
        audit, framework="soc2", control="CC6.1", since=SINCE, until=UNTIL, out=out,
        actor="auditor", tenant="acme",
    )  # fmt: skip
    assert summary.records == 6
    records = _records(out)
    tenants = {orjson.loads(str(r["entry"])).get("tenant") for r in records}
    assert tenants == {"acme"}
    assert b"globex" not in out.read_bytes() or all(
        b"globex" not in str(r).encode() for r in records
    )
    assert all(r["payload"] is not None and r["salt"] is not None for r in records)
    verified = verify_archive(out, LOG_KEY.verifier)
    assert verified.tenant == "acme"


def test_every_tenant_only_with_the_explicit_flag(api: Api) -> None:
    _populate(api.log)
    period = {"framework": "soc2", "control": "CC6.1", "since": "2026-11-01", "until": "2026-12-01"}
    unscoped = api.get("/v1/audit/evidence", "compliance-token", params=period)
    assert unscoped.status_code == 400 and "all_tenants" in unscoped.text
    both = api.get("/v1/audit/evidence", "compliance-token", params={**period, "tenant": "acme"})
    assert both.status_code == 200
    everything = api.get(
        "/v1/audit/evidence", "compliance-token", params={**period, "all_tenants": "true"}
    )
    assert everything.status_code == 200
    assert len(_records(everything.content)) == 10
    operator = api.get(
        "/v1/audit/evidence", "operator-token", params={**period, "all_tenants": "true"}
    )
    assert operator.status_code == 403


def _export_peak(log: AuditLog, out: Path) -> int:
    tracemalloc.start()
    try:
        export_archive(
            log, framework="soc2", control="CC6.1", since=SINCE, until=UNTIL, out=out,
            actor="auditor", tenant="acme",
        )  # fmt: skip
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_large_period_exports_in_bounded_memory(open_audit: AuditFactory, tmp_path: Path) -> None:
    log = open_audit(max_events=5000)
    log.ingest_upload(gzip_batch(events(3000, start=T0)), "gzip")
    peak_small = _export_peak(log, tmp_path / "small.tar.gz")
    for start in range(3000, 15_000, 4000):
        log.ingest_upload(gzip_batch(events(4000, start=T0 + timedelta(seconds=start))), "gzip")
    peak_large = _export_peak(log, tmp_path / "large.tar.gz")
    assert verify_archive(tmp_path / "large.tar.gz", LOG_KEY.verifier).records == 15_000
    assert peak_large < 1.5 * peak_small + 4 * 1024 * 1024, (
        f"5x the records, peak {peak_small / 1e6:.1f} MB -> {peak_large / 1e6:.1f} MB"
    )
