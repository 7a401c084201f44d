"""Attacks 2 and 3: undoing crypto-shredding from leftovers, and one-person or held erasure."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import create_engine, text

from nexus_audit.catalog import Catalogs
from nexus_audit.envelope import LocalKeyWrapper, data_key_context
from nexus_audit.erasure import (
    LegalHoldError,
    SamePersonError,
    approve_erasure,
    request_erasure,
)
from nexus_audit.facts import StaticFacts
from nexus_audit.service import AuditLog
from tests.fixtures.servers import PostgresServer
from tests.security.conftest import Api, AuditFactory
from tests.unit.audit.harness import MASTER_KEY, TENANTS, erase, open_log
from tests.unit.audit.opa_events import T0, decision_event, gzip_batch


def _secrets(url: str, tenant: str) -> list[bytes]:
    """Every wrapped key, unwrapped key and ciphertext of ``tenant``, as an attacker sees them."""
    engine = create_engine(url)
    with engine.connect() as db:
        keys = db.execute(
            text("SELECT key_id, tenant, subject, wrapped_key FROM data_keys WHERE tenant = :t"),
            {"t": tenant},
        ).all()
        ciphertexts = db.execute(
            text("SELECT ciphertext FROM payloads WHERE tenant = :t"), {"t": tenant}
        ).scalars()
        found = [bytes(c) for c in ciphertexts]
    engine.dispose()
    wrapper = LocalKeyWrapper(MASTER_KEY)
    for key_id, owner, subject, wrapped in keys:
        found.append(bytes(wrapped))
        found.append(wrapper.unwrap(bytes(wrapped), data_key_context(key_id, owner, subject)))
    assert len(keys) >= 2, "a tenant key and a subject key"
    return found


def _files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


def _leftovers(paths: list[Path], secrets: list[bytes]) -> list[str]:
    hits = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for secret in secrets:
            if secret and secret in data:
                hits.append(f"{path} holds {secret[:8].hex()}…")
    return hits


def _populate(log: AuditLog) -> None:
    batch = [decision_event(subject="alice", time=T0 + timedelta(seconds=i)) for i in range(20)]
    batch += [decision_event(time=T0 + timedelta(minutes=1, seconds=i)) for i in range(20)]
    batch += [decision_event(tenant="globex", time=T0 + timedelta(minutes=2)) for _ in range(5)]
    log.ingest_upload(gzip_batch(batch), "gzip")
    log.checkpoint()


def test_erased_keys_leave_no_copy_in_the_sqlite_files_wal_or_a_backup(
    tmp_path: Path, catalogs: Catalogs
) -> None:
    url = f"sqlite:///{tmp_path}/audit.db"
    log = open_log(url, catalogs, lambda: T0 + timedelta(days=1))
    _populate(log)
    secrets = _secrets(url, "acme")
    files = [tmp_path / "audit.db", tmp_path / "audit.db-wal"]
    assert _leftovers(files, secrets), "the grep finds the keys before the erasure"

    result = erase(log, tenant="acme")
    assert result.compacted and result.keys_destroyed == 2
    with (
        sqlite3.connect(tmp_path / "audit.db") as source,
        sqlite3.connect(tmp_path / "backup.db") as backup,
    ):
        source.backup(backup)
    log.close()
    assert _leftovers([*files, tmp_path / "backup.db"], secrets) == []


def test_erased_keys_leave_no_copy_in_postgresql_files_wal_or_a_base_backup(
    own_postgres: PostgresServer, tmp_path: Path, catalogs: Catalogs
) -> None:
    own_postgres.psql("CREATE DATABASE erasure")
    url = own_postgres.url.rsplit("/", 1)[0] + "/erasure"
    log = open_log(url, catalogs, lambda: T0 + timedelta(days=1), journal=tmp_path / "j.jsonl")
    _populate(log)
    secrets = _secrets(url, "acme")
    own_postgres.psql("CHECKPOINT")
    assert _leftovers(_files(own_postgres.data), secrets), "found before the erasure"

    result = erase(log, tenant="acme")
    assert result.compacted
    log.close()
    own_postgres.base_backup(tmp_path / "base-backup")
    leftovers = _leftovers(_files(own_postgres.data) + _files(tmp_path / "base-backup"), secrets)
    assert leftovers == []


def test_an_erasure_needs_a_second_person(audit: AuditLog) -> None:
    _populate(audit)
    request = request_erasure(
        audit, tenant="acme", requested_by="dpo@nexus.example", requester_id="token-1"
    )
    with pytest.raises(SamePersonError):
        approve_erasure(audit, request.id, approved_by="dpo@nexus.example")
    with pytest.raises(SamePersonError):
        approve_erasure(audit, request.id, approved_by="renamed", approver_id="token-1")
    assert audit.payload(0).status == "present"
    approve_erasure(audit, request.id, approved_by="second@nexus.example", approver_id="token-2")
    assert audit.payload(0).status == "erased"


def test_an_erasure_over_http_needs_a_second_principal(api: Api) -> None:
    _populate(api.log)
    requested = api.post("/v1/audit/erasure", "compliance-token", json={"tenant": "acme"})
    assert requested.status_code == 202, requested.text
    request_id = requested.json()["id"]
    alone = api.post(f"/v1/audit/erasure/{request_id}/approve", "compliance-token")
    assert alone.status_code == 403 and alone.json()["error"]["code"] == "same_person"
    assert api.log.payload(0).status == "present"
    second = api.post(f"/v1/audit/erasure/{request_id}/approve", "compliance-2-token")
    assert second.status_code == 200, second.text
    assert api.log.payload(0).status == "erased"


def test_a_tenant_under_legal_hold_cannot_be_erased(api: Api) -> None:
    api.log.use_facts(StaticFacts(TENANTS, {"acme": ("chat-history",)}))
    _populate(api.log)
    refused = api.post("/v1/audit/erasure", "compliance-token", json={"tenant": "acme"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "legal_hold"
    assert "chat-history" in refused.json()["error"]["message"]
    last = orjson.loads(api.log.leaf(index=api.log.size() - 1).entry)
    assert last["type"] == "gdpr.erasure_refused"
    assert api.log.payload(0).status == "present"


def test_a_hold_placed_after_the_request_stops_the_approval(audit: AuditLog) -> None:
    _populate(audit)
    request = request_erasure(audit, tenant="acme", requested_by="dpo")
    audit.use_facts(StaticFacts(TENANTS, {"*": ("audit-payloads",)}))
    with pytest.raises(LegalHoldError):
        approve_erasure(audit, request.id, approved_by="second-dpo")
    assert audit.payload(0).status == "present"


@pytest.mark.parametrize("scope", ["_control-plane", "unknown", "unknown:0123", "*", "_anything"])
def test_reserved_scopes_cannot_be_erased(api: Api, scope: str) -> None:
    refused = api.post("/v1/audit/erasure", "compliance-token", json={"tenant": scope})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "reserved_scope"


def test_every_step_of_an_erasure_is_a_leaf_and_none_names_the_subject(
    open_audit: AuditFactory,
) -> None:
    log = open_audit()
    _populate(log)
    before = log.size()
    erase(log, tenant="acme", subject="alice", reference="DSR-9")
    steps = [orjson.loads(log.leaf(index=i).entry) for i in range(before, log.size())]
    assert [step["type"] for step in steps] == [
        "gdpr.erasure_requested",
        "gdpr.erasure",
        "gdpr.erasure_compacted",
    ]
    assert all(b"alice" not in log.leaf(index=i).entry for i in range(before, log.size()))
