"""Audit settings and key files: defaults, NEXUS_AUDIT_ variables, owner-only keys."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from nexus_audit.keyfiles import (
    KeyFileError,
    init_log_key,
    init_master_key,
    load_log_key,
    load_master_key,
)
from nexus_audit.note import Verifier
from nexus_audit.settings import AuditSettings


def test_defaults_suit_the_one_machine_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "ORIGIN", "CHECKPOINT_EVERY_LEAVES"):
        monkeypatch.delenv(f"NEXUS_AUDIT_{name}", raising=False)
    settings = AuditSettings()
    assert settings.database_url == "sqlite:///.nexus/audit.db"
    assert settings.origin == "nexus.local/audit"
    assert (settings.checkpoint_every_leaves, settings.checkpoint_every_s) == (1000, 5.0)
    assert (settings.max_batch_bytes, settings.max_batch_events) == (32 * 1024 * 1024, 100_000)


def test_settings_come_from_nexus_audit_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_AUDIT_DATABASE_URL", "postgresql+psycopg://x/audit")
    monkeypatch.setenv("NEXUS_AUDIT_CHECKPOINT_EVERY_S", "0.5")
    settings = AuditSettings()
    assert settings.database_url == "postgresql+psycopg://x/audit"
    assert settings.checkpoint_every_s == 0.5


def test_init_log_key_writes_an_owner_only_key_and_its_public_half(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "log.key"
    signer = init_log_key(path, "audit.example/log")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_log_key(path) == signer
    public = Verifier.parse((tmp_path / "keys" / "log.key.pub").read_text().strip())
    assert public == signer.verifier
    assert signer.name == "audit.example/log"


def test_init_master_key_writes_32_owner_only_bytes(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    key = init_master_key(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_key(path) == key
    assert len(base64.b64decode(path.read_text())) == 32


def test_existing_keys_are_not_overwritten_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = init_master_key(path)
    with pytest.raises(KeyFileError, match="already exists"):
        init_master_key(path)
    assert load_master_key(path) == first
    assert init_master_key(path, force=True) != first


def test_missing_or_malformed_keys_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="init-keys"):
        load_log_key(tmp_path / "absent.key")
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(KeyFileError, match="not a signed-note private key"):
        load_log_key(bad)
    bad.write_text(base64.b64encode(b"short").decode())
    with pytest.raises(KeyFileError, match="5 bytes"):
        load_master_key(bad)
