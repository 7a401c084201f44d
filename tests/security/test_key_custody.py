"""Key custody: the master key stays in the token, and the CLI verifies with the key it is told."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass
from typer.testing import CliRunner

from nexus_audit.catalog import Catalogs
from nexus_audit.cli import audit_app
from nexus_audit.envelope import Pkcs11KeyWrapper
from nexus_audit.service import AuditLog
from nexus_audit.settings import AuditSettings
from tests.fixtures.softhsm import SoftHsm
from tests.unit.audit.harness import FACTS, erase, open_log
from tests.unit.audit.opa_events import T0, decision_event, gzip_batch


def test_the_payload_master_key_never_leaves_the_pkcs11_token(
    softhsm: SoftHsm, database_url: str, tmp_path: Path, catalogs: Catalogs
) -> None:
    label = f"audit-master-{tmp_path.name}"
    Pkcs11KeyWrapper.create_key(softhsm.module, softhsm.token_label, softhsm.pin, label)
    wrapper = Pkcs11KeyWrapper(softhsm.module, softhsm.token_label, softhsm.pin, label)
    log = open_log(
        database_url, catalogs, lambda: T0 + timedelta(days=1), wrapper=wrapper,
        journal=tmp_path / "j.jsonl",
    )  # fmt: skip
    try:
        events = [decision_event(subject="alice"), decision_event()]
        log.ingest_upload(gzip_batch(events), "gzip")
        assert log.payload(0).plaintext is not None
        erase(log, tenant="acme", subject="alice")
        assert log.payload(0).status == "erased"
        assert log.payload(1).status == "present"
    finally:
        log.close()
        wrapper.close()

    token = pkcs11.lib(str(softhsm.module)).get_token(token_label=softhsm.token_label)
    try:
        opened = token.open(user_pin=softhsm.pin)
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        opened = token.open()
    with opened as session:
        key = session.get_key(
            label=label, key_type=KeyType.AES, object_class=ObjectClass.SECRET_KEY
        )
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        with pytest.raises(pkcs11.PKCS11Error):
            key[Attribute.VALUE]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_audit_commands_use_the_keys_of_nexus_keys_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("NEXUS_AUDIT_DATABASE_URL", database_url)
    monkeypatch.delenv("NEXUS_AUDIT_LOG_KEY_FILE", raising=False)
    monkeypatch.setenv("NEXUS_KEYS_DIR", str(tmp_path / "right"))
    assert CliRunner().invoke(audit_app, ["init-keys"]).exit_code == 0
    monkeypatch.setenv("NEXUS_AUDIT_DECISION_MAX_AGE_S", str(10 * 365 * 86400))
    log = AuditLog.from_settings(AuditSettings())
    log.use_facts(FACTS)
    log.ingest_upload(gzip_batch([decision_event()]), "gzip")
    log.checkpoint()
    log.close()
    assert AuditSettings().log_key_file == tmp_path / "right" / "audit-log.key"
    verified = CliRunner().invoke(audit_app, ["verify"])
    assert verified.exit_code == 0, verified.output

    monkeypatch.setenv("NEXUS_KEYS_DIR", str(tmp_path / "wrong"))
    assert CliRunner().invoke(audit_app, ["init-keys"]).exit_code == 0
    refused = CliRunner().invoke(audit_app, ["verify"])
    assert refused.exit_code == 1, "another keys directory's key does not verify this log"
