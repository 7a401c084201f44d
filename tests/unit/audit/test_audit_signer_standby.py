"""One signer among replicas: a standby never signs, waits for the signer's checkpoint, and a
takeover carries the database's newest checkpoint into its own journal before signing on."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from nexus_audit import signer as signer_module
from nexus_audit.signer import SignerUnavailableError
from tests.unit.audit.conftest import LogFactory
from tests.unit.audit.opa_events import T0, events, gzip_batch


def test_a_standby_appends_but_never_signs_and_serves_the_signers_checkpoint(
    make_log: LogFactory, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    holder = make_log(url, journal=tmp_path / "a.jsonl", every_leaves=1)
    standby = make_log(url, journal=tmp_path / "b.jsonl", every_leaves=1)
    standby.checkpoint_signer.stand_by()
    assert not standby.checkpoint_signer.signing
    standby.ingest_upload(gzip_batch(events(3)), "gzip")
    assert standby.latest_checkpoint() is None, "the standby signed after its own append"
    assert not standby.journal.exists()

    signed = threading.Timer(0.2, holder.checkpoint)
    signed.start()
    try:
        waited = standby.checkpoint()  # waits for the holder's checkpoint of the tree
    finally:
        signed.join()
    assert waited.size == 3
    assert not standby.journal.exists(), "a standby's journal stays untouched"


def test_a_standby_without_a_signer_answers_unavailable_in_bounded_time(
    make_log: LogFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signer_module, "STANDBY_WAIT_MIN_S", 0.1)
    standby = make_log(f"sqlite:///{tmp_path}/alone.db", every_s=0.05)
    standby.checkpoint_signer.stand_by()
    standby.ingest_upload(gzip_batch(events(2)), "gzip")
    with pytest.raises(SignerUnavailableError, match="does not hold the signer lease"):
        standby.checkpoint()


def test_a_takeover_continues_the_previous_signers_chain_in_its_own_journal(
    make_log: LogFactory, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    previous = make_log(url, journal=tmp_path / "a.jsonl")
    successor = make_log(url, journal=tmp_path / "b.jsonl")
    successor.checkpoint_signer.stand_by()
    previous.ingest_upload(gzip_batch(events(4)), "gzip")
    handed_over = previous.checkpoint()
    previous.checkpoint_signer.stand_by()
    more = events(2, start=T0 + timedelta(minutes=5))
    successor.ingest_upload(gzip_batch(more), "gzip")

    signed = successor.checkpoint_signer.take_over()
    assert successor.checkpoint_signer.signing
    assert signed.size == 6
    records = list(successor.journal.records())
    assert [r.size for r in records] == [4, 6]
    assert records[0].note == handed_over.published_note, "the chain was carried over, proven"
    assert previous.checkpoint_signer.maybe_checkpoint() is None, "the old signer stays quiet"
