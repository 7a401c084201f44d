"""Three `nexus-policy serve` replicas on one real PostgreSQL (control plane and audit log).

Exactly one replica holds the rollout engine's lease and exactly one the audit log's
checkpoint signer lease. Decision logs flow round robin through every replica's intake
while the signer's holder is killed with `kill -9`: another replica takes the signer
over, every accepted decision is a leaf exactly once, and the log verifies with one
chain of checkpoints, against the database and each signer's journal. Then the rollout
lease's holder is killed and another replica takes that over too, the survivors ready.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from nexus_audit import storage
from nexus_audit.database import AuditDatabase
from nexus_audit.journal import CheckpointJournal
from nexus_audit.keyfiles import load_log_key
from nexus_audit.service import SIGNER_LEASE
from nexus_audit.settings import AuditSettings
from nexus_audit.tables import Leaf
from nexus_audit.verify import verify_log
from nexus_contract.wire import ENFORCER_HEADER, OPA_API_PREFIX
from nexus_control.plane import ROLLOUT_LEASE
from nexus_dataplane.process import http_ok
from tests.fixtures.replicas import Replicas, lease_holders, wait_for
from tests.unit.audit.opa_events import decision_event, gzip_batch

pytestmark = pytest.mark.postgres

TAKEOVER_TIMEOUT_S = 60.0
BATCH = 40
"""Decisions per upload; one upload every `PACE_S` paces at most 400 decisions/s
(the issue asks for 300/s; the rate reached is printed, never asserted)."""
PACE_S = 0.1
FLOW_BEFORE_KILL_S = 2.0
FLOW_AFTER_TAKEOVER_S = 2.0
MAX_ATTEMPTS = 50
"""An upload no live replica accepts after this many tries fails the test."""


class DecisionFlow(threading.Thread):
    """Uploads batches of fresh decisions round robin over the live replicas, as OPA would:
    an upload without a 200 answer is sent again (same decisions) to the next replica."""

    def __init__(self, ports: Callable[[], list[int]], token: str) -> None:
        super().__init__(name="decision-flow", daemon=True)
        self._ports = ports
        self._token = token
        self.stop = threading.Event()
        self.accepted: list[str] = []
        self.retried = 0
        self.failure: str | None = None
        self.seconds = 0.0
        self._turn = 0

    def _post(self, port: int, body: bytes) -> bool:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{OPA_API_PREFIX}/logs",
            data=body,
            method="POST",
            headers={
                "authorization": f"Bearer {self._token}",
                "content-encoding": "gzip",
                "content-type": "application/json",
                ENFORCER_HEADER: "eu-west-1-a",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def run(self) -> None:
        began = time.monotonic()
        try:
            self._flow()
        finally:
            self.seconds = time.monotonic() - began

    def _flow(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            now = datetime.now(UTC)
            batch = [
                decision_event(decision_id=str(uuid.uuid4()), time=now, allowed=n % 2 == 0)
                for n in range(BATCH)
            ]
            body = gzip_batch(batch)
            for attempt in range(MAX_ATTEMPTS):
                ports = self._ports()
                self._turn += 1
                if ports and self._post(ports[self._turn % len(ports)], body):
                    break
                self.retried += 1
                time.sleep(0.05 * min(attempt + 1, 4))
            else:
                self.failure = f"no replica accepted an upload in {MAX_ATTEMPTS} attempts"
                return
            self.accepted.extend(event["decision_id"] for event in batch)
            self.stop.wait(max(0.0, PACE_S - (time.monotonic() - started)))


def test_one_signer_and_one_rollout_engine_among_three_replicas_with_takeovers_after_kill_9(
    pg_url: str, audit_pg_url: str, tmp_path: Path
) -> None:
    audit_url = audit_pg_url
    replicas = Replicas(
        tmp_path,
        pg_url,
        audit_url,
        env={"NEXUS_AUDIT_CHECKPOINT_EVERY_S": "0.5", "NEXUS_AUDIT_CHECKPOINT_EVERY_LEAVES": "100"},
    )
    keys_dir, journals, killed = replicas.keys_dir, replicas.journals, replicas.killed
    flow = DecisionFlow(replicas.live_ports, replicas.tokens["enforcer"])
    audit_db = AuditDatabase(audit_url)
    try:
        replicas.start()
        pids = replicas.pids

        # --- the signer: one holder; kill -9 it while decisions flow -------------
        wait_for(lambda: len(lease_holders(audit_url, SIGNER_LEASE)) == 1, 30, "no signer")
        (signer,) = lease_holders(audit_url, SIGNER_LEASE)
        assert signer in pids
        flow.start()
        time.sleep(FLOW_BEFORE_KILL_S)
        replicas.kill(pids.index(signer))
        wait_for(
            lambda: (h := lease_holders(audit_url, SIGNER_LEASE)) and h[0] != signer,
            TAKEOVER_TIMEOUT_S,
            "no replica took the signer over after kill -9",
        )
        (successor,) = lease_holders(audit_url, SIGNER_LEASE)
        assert successor in pids and successor != signer
        time.sleep(FLOW_AFTER_TAKEOVER_S)
        flow.stop.set()
        flow.join(timeout=60)
        assert flow.failure is None, flow.failure
        assert len(flow.accepted) >= 2 * BATCH, "decisions flowed before and after the kill"

        # Every accepted decision is a leaf exactly once (retries after the kill included).
        accepted = set(flow.accepted)
        assert len(accepted) == len(flow.accepted)
        with audit_db.session() as session:
            logged = list(session.scalars(select(Leaf.decision_id).where(Leaf.kind == "decision")))
        assert len(logged) == len(set(logged))
        assert set(logged) == accepted

        # The successor signs the whole tree; one chain, in the database and each journal.
        def covered() -> bool:
            with audit_db.session() as session:
                latest = storage.latest_checkpoint(session)
                return latest is not None and latest.size == storage.tree_size(session)

        wait_for(covered, 30, "the new signer signed no checkpoint covering the tree")
        verifier = load_log_key(keys_dir / AuditSettings().log_key_file.name).verifier
        signer_journals = {pids.index(signer), pids.index(successor)}
        for i, path in enumerate(journals):
            if i not in signer_journals:
                assert not path.exists(), f"replica {i} never held the signer lease yet signed"
        report = verify_log(audit_db, verifier)
        for i in sorted(signer_journals):
            checked = verify_log(audit_db, verifier, journal=CheckpointJournal(journals[i]))
            assert checked.size == report.size and checked.journal_checkpoints > 0
        before = CheckpointJournal(journals[pids.index(signer)]).by_size()
        after = list(CheckpointJournal(journals[pids.index(successor)]).records())
        # The takeover's first record is the predecessor's newest checkpoint, proven
        # and carried over: the successor's journal continues the predecessor's chain.
        assert after[0].size in before and after[0].note == before[after[0].size]
        assert max(r.size for r in after) == report.size
        print(
            f"decisions accepted {len(flow.accepted)} in {flow.seconds:.1f} s "
            f"({len(flow.accepted) / flow.seconds:.0f}/s), uploads retried {flow.retried}, "
            f"leaves {report.size}, checkpoints {report.checkpoints}"
        )

        # --- the rollout engine: one holder; kill -9 it ------------------------
        wait_for(lambda: len(lease_holders(pg_url, ROLLOUT_LEASE)) == 1, 30, "no engine")
        (holder,) = lease_holders(pg_url, ROLLOUT_LEASE)
        assert holder in pids and pids.index(holder) not in killed
        replicas.kill(pids.index(holder))
        wait_for(
            lambda: (h := lease_holders(pg_url, ROLLOUT_LEASE)) and h[0] != holder,
            TAKEOVER_TIMEOUT_S,
            "no replica took the rollout lease over after kill -9",
        )
        (engine,) = lease_holders(pg_url, ROLLOUT_LEASE)
        assert engine in pids and pids.index(engine) not in killed
        for port in replicas.live_ports():
            assert http_ok(f"http://127.0.0.1:{port}/readyz")
    finally:
        flow.stop.set()
        audit_db.dispose()
        replicas.stop()
