"""The audit log as one service: intake, events, checkpoints, witnesses and proofs.

`AuditLog` owns the pieces (database, log key, key wrapper, catalogs,
checkpoint signer and journal, witnesses, the facts of the policy in force)
and is what the HTTP router, the CLI and the control plane's outbox drainer
call. Erasure, retention, coverage and evidence export live in their own
modules and work through it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_audit import storage
from nexus_audit.catalog import Catalogs, load_catalogs
from nexus_audit.database import AuditDatabase
from nexus_audit.enforcer_records import (
    EnforcerRecordKind,
    EnforcerRecordRefusedError,
    prepare_records,
    split_upload,
)
from nexus_audit.envelope import KeyWrapper, LocalKeyWrapper, Pkcs11KeyWrapper
from nexus_audit.events import (
    CONTROL_PLANE_EVENT_PREFIX,
    SECURITY_EVENT_PREFIX,
    ControlEvent,
    PreparedEvent,
    prepare_event,
)
from nexus_audit.facts import NoFacts, PolicyFacts
from nexus_audit.gc_pause import cyclic_gc_paused
from nexus_audit.intake import (
    DecisionConflictError,
    DecisionEvent,
    EnforcerMismatchError,
    IntakeLimits,
    IntakeRules,
    ParsedEvent,
    PreparedDecision,
    TimeSkewAction,
    Uploader,
    check_uploader,
    prepare_decisions,
    read_events,
)
from nexus_audit.journal import CheckpointJournal
from nexus_audit.keyfiles import KeyFileError, load_log_key, load_master_key
from nexus_audit.log_gauges import OutboxPending
from nexus_audit.logsecret import CONTENT_MAC, TENANT_SALT, LogSecrets
from nexus_audit.metrics import DECISION_CONFLICT, ENFORCER_MISMATCH, AuditMetrics
from nexus_audit.note import Signer, Verifier
from nexus_audit.payloads import (
    MAX_SUBJECT_LENGTH,
    MAX_TENANT_LENGTH,
    PayloadToSeal,
    PayloadVault,
    scope_name,
)
from nexus_audit.policy import TlogPolicy
from nexus_audit.reader import (
    AuditError,
    CheckpointNotFoundError,
    ConsistencyProof,
    LeafNotFoundError,
    LeafNotInCheckpointError,
    LogReader,
    QuorumUnavailableError,
)
from nexus_audit.receipts import RECEIPTS
from nexus_audit.settings import AuditSettings, MasterKeyProvider
from nexus_audit.shadows import SHADOWS
from nexus_audit.signer import CheckpointChainError, CheckpointSigner, SignedCheckpoint
from nexus_audit.tables import DeadLetter, Leaf
from nexus_audit.uploads import UploadGate
from nexus_audit.witness.client import Witnessed, WitnessPool
from nexus_contract.errors import NexusError
from nexus_runtime.lease import AdvisoryLease, hold_while_leader

__all__ = [
    "SIGNER_LEASE",
    "AppendResult",
    "AuditError",
    "AuditLog",
    "CheckpointNotFoundError",
    "ConsistencyProof",
    "LeafNotFoundError",
    "LeafNotInCheckpointError",
    "QuorumUnavailableError",
]

log = logging.getLogger("nexus.audit")

SIGNER_LEASE = "nexus-audit-signer"
"""The lease naming the one replica that signs checkpoints (PostgreSQL only)."""

_CONFLICT_EVENT = SECURITY_EVENT_PREFIX + DECISION_CONFLICT
_MISMATCH_EVENT = SECURITY_EVENT_PREFIX + ENFORCER_MISMATCH
_DEAD_LETTER_EVENT = "outbox.dead_lettered"
_RECORD_KINDS: tuple[tuple[EnforcerRecordKind[Any], str], ...] = (
    (RECEIPTS, "receipts_skipped"),
    (SHADOWS, "shadows_skipped"),
)
"""Each enforcer record kind the intake takes, and the metric its skipped records count in."""


@dataclass(frozen=True)
class AppendResult:
    """How many leaves a batch added, and how many it skipped as already logged."""

    accepted: int
    duplicates: int
    size: int
    """The tree size after the batch."""
    flagged: int = 0
    """Decisions stored with a flag (time outside the window, unknown tenant)."""

    def as_dict(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "size": self.size,
            "flagged": self.flagged,
        }


def wrapper_from_settings(settings: AuditSettings) -> KeyWrapper:
    """The master key provider the settings name: a key file, or a PKCS#11 token."""
    if settings.master_key_provider is MasterKeyProvider.FILE:
        return LocalKeyWrapper(load_master_key(settings.master_key_file))
    if settings.pkcs11_module is None or settings.pkcs11_pin_file is None:
        raise AuditError(
            "the pkcs11 master key provider needs NEXUS_AUDIT_PKCS11_MODULE and "
            "NEXUS_AUDIT_PKCS11_PIN_FILE"
        )
    try:
        pin = settings.pkcs11_pin_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KeyFileError(
            f"{settings.pkcs11_pin_file}: cannot read the token PIN: {exc}"
        ) from None
    return Pkcs11KeyWrapper(
        settings.pkcs11_module, settings.pkcs11_token, pin, settings.pkcs11_key_label
    )


class AuditLog(LogReader):
    """The audit service. Thread-safe: the database serialises appends."""

    def __init__(
        self,
        db: AuditDatabase,
        signer: Signer,
        wrapper: KeyWrapper,
        catalogs: Catalogs,
        *,
        journal: CheckpointJournal,
        checkpoint_every_leaves: int,
        checkpoint_every_s: float,
        limits: IntakeLimits,
        rules: IntakeRules | None = None,
        witnesses: WitnessPool | None = None,
        facts: PolicyFacts | None = None,
        uploads: UploadGate | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.catalogs = catalogs
        self.limits = limits
        self.rules = rules or IntakeRules()
        self.metrics = AuditMetrics()
        self.facts: PolicyFacts = facts or NoFacts()
        self.uploads = uploads or UploadGate()
        self.witnesses = witnesses
        self.wrapper = wrapper
        self.vault = PayloadVault(wrapper)
        self.secrets = LogSecrets(db, wrapper)
        self.checkpoint_signer = CheckpointSigner(
            db,
            signer,
            journal,
            every_leaves=checkpoint_every_leaves,
            every_s=checkpoint_every_s,
            clock=clock,
            on_signed=self._signed,
            on_chain_error=self._chain_broken,
        )
        self._verifier = signer.verifier
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._witness_lock = threading.Lock()
        self._to_witness: SignedCheckpoint | None = None
        self._witness_wake = threading.Event()
        self.last_witnessed: Witnessed | None = None
        self.outbox_pending: OutboxPending | None = None
        """The host's outbox draining into this log (`use_outbox`), for its gauge."""

    @classmethod
    def from_settings(cls, settings: AuditSettings, *, migrate: bool = True) -> AuditLog:
        """Open the log the settings describe; the key files must exist (`init-keys`)."""
        signer = load_log_key(settings.log_key_file)
        if signer.name != settings.origin:
            raise AuditError(
                f"{settings.log_key_file}: the log key is named {signer.name!r} but the "
                f"origin is {settings.origin!r}; they must be equal"
            )
        wrapper = wrapper_from_settings(settings)
        db = AuditDatabase(settings.database_url)
        if migrate:
            db.migrate()
        witnesses = None
        if settings.witness_policy_file is not None:
            try:
                text = settings.witness_policy_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise AuditError(f"{settings.witness_policy_file}: {exc}") from None
            policy = TlogPolicy.parse(text, source=str(settings.witness_policy_file))
            witnesses = WitnessPool(policy, db, timeout_s=settings.witness_timeout_s)
        return cls(
            db,
            signer,
            wrapper,
            load_catalogs(settings.catalogs_dir),
            journal=CheckpointJournal(settings.checkpoint_journal),
            checkpoint_every_leaves=settings.checkpoint_every_leaves,
            checkpoint_every_s=settings.checkpoint_every_s,
            limits=IntakeLimits(
                settings.max_batch_bytes,
                settings.max_batch_events,
                max_inflated_bytes=settings.max_inflated_bytes,
            ),
            rules=IntakeRules(
                max_age=timedelta(seconds=settings.decision_max_age_s),
                max_ahead=timedelta(seconds=settings.decision_max_ahead_s),
                time_skew=TimeSkewAction(settings.time_skew),
                require_bound_credentials=settings.require_enforcer_tokens,
            ),
            witnesses=witnesses,
            uploads=UploadGate(settings.max_uploads, settings.max_uploads_per_enforcer),
        )

    @property
    def verifier(self) -> Verifier:
        """The log's public key: what checkpoints, proofs and exports verify against."""
        return self._verifier

    @property
    def origin(self) -> str:
        return self._verifier.name

    @property
    def journal(self) -> CheckpointJournal:
        return self.checkpoint_signer.journal

    def now(self) -> datetime:
        return self._clock()

    def use_facts(self, facts: PolicyFacts) -> None:
        """Take tenants and legal holds from ``facts`` (the host's policy in force)."""
        self.facts = facts

    def use_outbox(self, pending: OutboxPending) -> None:
        """Report ``pending()`` as the outbox backlog (the co-located control plane's)."""
        self.outbox_pending = pending

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Sign an initial checkpoint if there is none, and start the timer and witnessing.

        On PostgreSQL (possibly several replicas) the signer runs only while this
        process holds the `SIGNER_LEASE`; until then it stands by (`_sign_while_leader`).
        """
        if self._threads:
            return
        leased = self.db.is_postgresql
        if not leased and self.checkpoint_signer.latest() is None:
            self.checkpoint_signer.checkpoint()
        self._stop.clear()
        signer_loop: Callable[[], None]
        if leased:
            self.checkpoint_signer.stand_by()
            lease = AdvisoryLease(self.db.url, SIGNER_LEASE)
            signer_loop = partial(hold_while_leader, lease, self._stop, self._sign_while_leader)
        else:
            # The only process on this database signs: the gauge says so, so "no replica
            # signs" (sum of signer_leader < 1) alerts alike on SQLite and PostgreSQL.
            self.metrics.set("signer_leader", 1.0)
            signer_loop = partial(self.checkpoint_signer.run, self._stop)
        loops: list[tuple[str, Callable[[], None]]] = [("audit-checkpoint-signer", signer_loop)]
        if self.witnesses is not None:
            loops.append(("audit-witnessing", self._witness_loop))
            latest = None if leased else self.checkpoint_signer.latest()
            if latest is not None and latest.cosigned_note is None:
                self._signed(latest)
        for name, target in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _sign_while_leader(self, stop: threading.Event) -> None:
        """The signer lease's holder: take the chain over, then sign until ``stop``."""
        self.metrics.set("signer_leader", 1.0)
        try:
            latest = self.checkpoint_signer.take_over()
        except CheckpointChainError:
            latest = None  # logged and counted; the timer keeps refusing until restored
        except Exception:
            log.exception("taking the checkpoint signer over failed; the timer will retry")
            latest = None
        try:
            if self.witnesses is not None and latest is not None and latest.cosigned_note is None:
                self._signed(latest)
            self.checkpoint_signer.run(stop)
        finally:
            self.checkpoint_signer.stand_by()
            self.metrics.set("signer_leader", 0.0)

    def stop(self) -> None:
        self._stop.set()
        self._witness_wake.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []

    def close(self) -> None:
        self.stop()
        if self.witnesses is not None:
            self.witnesses.close()
        self.db.dispose()

    # --- checkpoints and witnesses ---------------------------------------------

    def _chain_broken(self, _: CheckpointChainError) -> None:
        self.metrics.set("chain_broken", 1.0)

    def _signed(self, signed: SignedCheckpoint) -> None:
        self.metrics.set("chain_broken", 0.0)
        if self.witnesses is None:
            return
        with self._witness_lock:
            if self._to_witness is None or signed.size >= self._to_witness.size:
                self._to_witness = signed
        self._witness_wake.set()

    def _witness_loop(self) -> None:
        while not self._stop.is_set():
            self._witness_wake.wait(1.0)
            self._witness_wake.clear()
            with self._witness_lock:
                pending, self._to_witness = self._to_witness, None
            if pending is None or self._stop.is_set():
                continue
            try:
                self.witness(pending)
            except Exception:
                log.exception("witnessing failed; the next checkpoint tries again")

    def witness(self, signed: SignedCheckpoint) -> Witnessed:
        """Submit ``signed`` to the witnesses now; keep what they cosigned."""
        if self.witnesses is None:
            raise QuorumUnavailableError(
                "no witnesses are configured (NEXUS_AUDIT_WITNESS_POLICY_FILE)"
            )
        result = self.witnesses.submit(signed.note, signed.size, self._prove)
        for outcome in result.outcomes:
            if outcome.line is not None:
                self.metrics.count("cosignatures", outcome.witness)
            else:
                self.metrics.count("witness_failures", outcome.witness)
        if result.cosigners:
            self.checkpoint_signer.record_cosigned(signed, result.cosigned_note)
        self.metrics.set("quorum_missed", 0.0 if result.quorum_met else 1.0)
        self.last_witnessed = result
        return result

    def witnessed_checkpoint(self) -> SignedCheckpoint:
        """A checkpoint of the tree as it is now, cosigned to the quorum (for evidence)."""
        signed = self.checkpoint()
        if self.witnesses is None:
            return signed
        if signed.cosigned_note is not None:
            try:
                self.witnesses.policy.verify(signed.cosigned_note)
                return signed
            except NexusError:
                pass
        result = self.witness(signed)
        if not result.quorum_met:
            problems = "; ".join(f"{o.witness}: {o.error}" for o in result.outcomes if o.error)
            raise QuorumUnavailableError(
                f"checkpoint {signed.size} is cosigned by {list(result.cosigners) or 'nobody'}, "
                f"short of the quorum ({self.witnesses.policy.describe_quorum()}): {problems}"
            )
        found = self.checkpoint_signer.at(signed.size)
        assert found is not None
        return found

    def _prove(self, old_size: int, new_size: int) -> tuple[bytes, ...]:
        with self.db.session() as session:
            return storage.consistency_proof(session, old_size, new_size)

    # --- appending -----------------------------------------------------------

    def ingest_upload(
        self, body: bytes, content_encoding: str | None, uploader: Uploader | None = None
    ) -> AppendResult:
        """Take one decision_logs upload as OPA sends it; all or nothing.

        ``uploader`` is who sends it (credential binding and header); omitted,
        events are taken at their labels' word (tools and tests only). Raises
        `nexus_audit.intake.IntakeError` subclasses for a refused batch; a
        conflict or an enforcer speaking for another is also logged as a
        security event.
        """
        enforcer = None
        region = None
        if uploader is not None:
            try:
                enforcer = check_uploader(uploader, self.rules)
            except EnforcerMismatchError as exc:
                self._security_event(_MISMATCH_EVENT, uploader, exc)
                raise
            region = uploader.region
        with cyclic_gc_paused():
            upload = split_upload(
                read_events(body, content_encoding, self.limits),
                (spec.path for spec, _ in _RECORD_KINDS),
            )
            try:
                prepared = self._prepare(
                    upload.decisions, region=region, enforcer=enforcer, positions=upload.positions
                )
                records = self._prepare_records(upload.records, prepared, region, enforcer)
            except EnforcerMismatchError as exc:
                if uploader is not None:
                    self._security_event(_MISMATCH_EVENT, uploader, exc)
                raise
            except EnforcerRecordRefusedError as exc:
                self.metrics.count("security_events", exc.security_kind)
                self._append_security(
                    SECURITY_EVENT_PREFIX + exc.security_kind,
                    {"decision_id": exc.decision_id, "owner": exc.owner, "enforcer": enforcer},
                )
                raise
            return self._append_prepared_decisions(prepared, uploader, records)

    def _prepare_records(
        self,
        records: Mapping[str, Sequence[tuple[int, ParsedEvent]]],
        prepared: Sequence[PreparedDecision],
        region: str | None,
        enforcer: str | None,
    ) -> list[PreparedEvent]:
        """Enforcer records checked against their decisions (this upload's, else the log's)."""
        if not any(records.values()):
            return []
        batch = [(str(p.leaf.decision_id), str(orjson.loads(p.leaf.entry)["enforcer"]),
                  p.leaf.tenant) for p in prepared]  # fmt: skip
        events: list[PreparedEvent] = []
        with self.db.session() as session:
            for spec, skipped_metric in _RECORD_KINDS:
                found = prepare_records(session, spec, records.get(spec.path, ()), batch,
                                        region=region, enforcer=enforcer, now=self._clock(),
                                        rules=self.rules)  # fmt: skip
                events.extend(found.events)
                if found.skipped:
                    self.metrics.count(skipped_metric, "decision_not_logged", len(found.skipped))
                    log.warning(
                        f"{spec.kind} records for decisions not in the log skipped",
                        extra={"decision_ids": found.skipped[:10], "enforcer": enforcer},
                    )
        return events

    def append_decisions(
        self,
        events: Sequence[DecisionEvent],
        *,
        region: str | None = None,
        enforcer: str | None = None,
    ) -> AppendResult:
        """Append validated decision events in one transaction, skipping logged decision ids."""
        parsed = [ParsedEvent(event, _event_content(event)) for event in events]
        prepared = self._prepare(parsed, region=region, enforcer=enforcer)
        return self._append_prepared_decisions(prepared, None)

    def _prepare(
        self,
        parsed: Sequence[ParsedEvent],
        *,
        region: str | None,
        enforcer: str | None,
        positions: Sequence[int] | None = None,
    ) -> list[PreparedDecision]:
        salt = self.secrets.get(TENANT_SALT)

        def tenant_hash(claimed: str) -> str:
            return hmac.new(salt, claimed.encode(), hashlib.sha256).hexdigest()[:32]

        return prepare_decisions(
            parsed,
            self.catalogs,
            region=region,
            enforcer=enforcer,
            now=self._clock(),
            rules=self.rules,
            known_tenants=self.facts.known_tenants(),
            known_tools=self.facts.known_tools(),
            tenant_hash=tenant_hash,
            content_mac=lambda content: self.secrets.mac(CONTENT_MAC, content),
            positions=positions,
        )

    def _append_prepared_decisions(
        self,
        prepared: Sequence[PreparedDecision],
        uploader: Uploader | None,
        receipts: Sequence[PreparedEvent] = (),
    ) -> AppendResult:
        try:
            with self.db.session() as session:
                appended = self._append(session, [*prepared, *receipts])
        except DecisionConflictError as exc:
            self.metrics.count("security_events", DECISION_CONFLICT)
            self._append_security(
                _CONFLICT_EVENT,
                {
                    "decision_id": exc.decision_id,
                    "enforcer": None if uploader is None else uploader.header,
                    "region": None if uploader is None else uploader.region,
                },
            )
            raise
        indexes = appended.indexes[: len(prepared)]
        flagged = sum(1 for item, index in zip(prepared, indexes, strict=True)
                      if index is not None and item.flags)  # fmt: skip
        for item, index in zip(prepared, indexes, strict=True):
            if index is not None:
                for flag in item.flags:
                    self.metrics.count("decisions_flagged", flag)
        result = AppendResult(appended.accepted, appended.duplicates, appended.size, flagged)
        log.info("decisions appended", extra=result.as_dict())
        self._after_append(appended.size)
        return result

    def _security_event(self, event_type: str, uploader: Uploader, exc: Exception) -> None:
        kind = event_type.removeprefix(SECURITY_EVENT_PREFIX)
        self.metrics.count("security_events", kind)
        claimed = getattr(exc, "claimed", None)
        self._append_security(
            event_type,
            {
                "credential_enforcer": uploader.enforcer_id,
                "credential_region": uploader.region,
                "header_enforcer": uploader.header,
                "claimed_enforcer": claimed if isinstance(claimed, str) else None,
            },
        )

    def _append_security(self, event_type: str, payload: dict[str, Any]) -> None:
        try:
            event = prepare_event(
                event_type=event_type,
                actor="audit-intake",
                time=self._clock(),
                payload={k: (v[:128] if isinstance(v, str) else v) for k, v in payload.items()},
            )
            with self.db.session() as session:
                appended = self._append(session, [event])
            self._after_append(appended.size)
        except Exception:
            log.exception("could not log a security event", extra={"event_type": event_type})

    def append_events(self, events: Iterable[ControlEvent]) -> AppendResult:
        """Append control-plane outbox events in one transaction; idempotent on their ids."""
        prepared = [
            prepare_event(
                event_type=event.type,
                actor=event.actor,
                time=event.created_at,
                payload=event.payload,
                event_id=event.event_id,
                tenant=_string_or_none(event.payload.get("tenant")),
            )
            for event in events
        ]
        with self.db.session() as session:
            appended = self._append(session, prepared)
        result = AppendResult(appended.accepted, appended.duplicates, appended.size)
        log.info("events appended", extra=result.as_dict())
        self._after_append(appended.size)
        return result

    def dead_letter(self, source_id: int, record: dict[str, Any], error: str) -> None:
        """Keep an outbox event that failed validation, and log that it was set aside.

        The leaf (``outbox.dead_lettered``, event id ``cp-<id>``) names the
        outbox id, type and the error's first line, never the payload; the
        event itself waits in ``dead_letters`` for repair.
        """
        event_type = str(record.get("event_type") or record.get("type") or "?")[:64]
        now = self._clock()
        first_line = error.strip().splitlines()[0][:200] if error.strip() else "invalid"
        event = prepare_event(
            event_type=_DEAD_LETTER_EVENT,
            actor="outbox-drain",
            time=now,
            payload={"outbox_id": source_id, "event_type": event_type, "error": first_line},
            event_id=f"{CONTROL_PLANE_EVENT_PREFIX}{source_id}",
        )
        with self.db.session() as session:
            exists = session.scalar(select(DeadLetter.id).where(DeadLetter.source_id == source_id))
            if exists is None:
                session.add(
                    DeadLetter(
                        source_id=source_id,
                        event_type=event_type,
                        error=error[:4000],
                        record=orjson.dumps(record, default=str).decode(),
                        created_at=now.astimezone(UTC),
                    )
                )
            appended = self._append(session, [event])
        self.metrics.count("dead_letters", event_type)
        log.error(
            "outbox event dead-lettered",
            extra={"outbox_id": source_id, "event_type": event_type, "error": first_line},
        )
        self._after_append(appended.size)

    def dead_letters(self) -> int:
        with self.db.session() as session:
            return len(session.scalars(select(DeadLetter.id)).all())

    def append_event(self, event: PreparedEvent) -> int:
        """Append one prepared event in a transaction of its own; return its leaf index."""
        with self.db.session() as session:
            appended = self._append(session, [event])
        self._after_append(appended.size)
        index = appended.indexes[0]
        if index is None:
            raise AuditError(f"event {event.leaf.event_id} is already logged")
        return index

    def append_in(
        self, session: Session, items: Sequence[PreparedDecision | PreparedEvent]
    ) -> storage.Appended:
        """Append within the caller's transaction (erasure destroys keys in the same one).

        The caller must call `after_append` with the new size once it committed.
        """
        return self._append(session, items)

    def after_append(self, size: int) -> None:
        self._after_append(size)

    def _append(
        self, session: Session, items: Sequence[PreparedDecision | PreparedEvent]
    ) -> storage.Appended:
        now = self._clock()
        # The conflict check reads before `storage.append` locks the sequencer: on SQLite
        # that read must not open a snapshot another writer can make stale.
        locked = storage.lock_for_writing_first(session)
        self._check_conflicts(session, items)
        appended = storage.append(session, [item.leaf for item in items], now=now, locked=locked)
        to_seal = []
        for item, index in zip(items, appended.indexes, strict=True):
            if index is None:
                continue
            if isinstance(item, PreparedDecision):
                to_seal.append(
                    PayloadToSeal(
                        index, item.tenant, item.subject, item.payload, item.salt, item.leaf.time
                    )
                )
            elif item.payload is not None and item.salt is not None:
                tenant = scope_name(item.seal_tenant, MAX_TENANT_LENGTH)
                subject = (
                    None
                    if item.seal_subject is None
                    else scope_name(item.seal_subject, MAX_SUBJECT_LENGTH)
                )
                to_seal.append(
                    PayloadToSeal(index, tenant, subject, item.payload, item.salt, item.leaf.time)
                )
        self.vault.seal(session, to_seal, now=now, keys_epoch=appended.keys_epoch)
        return appended

    def _check_conflicts(
        self, session: Session, items: Sequence[PreparedDecision | PreparedEvent]
    ) -> None:
        """Refuse a decision id already logged, or repeated in the batch, with other content."""
        decisions = [i for i in items if isinstance(i, PreparedDecision) and i.content_mac]
        if not decisions:
            return
        seen: dict[str, bytes] = {}
        for item in decisions:
            decision_id = item.leaf.decision_id
            assert decision_id is not None
            assert item.content_mac is not None
            earlier = seen.setdefault(decision_id, item.content_mac)
            if earlier != item.content_mac:
                raise DecisionConflictError(
                    decision_id,
                    f"decision {decision_id} appears twice in the upload with different content",
                )
        ids = sorted(seen)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = session.execute(
                select(Leaf.decision_id, Leaf.content_mac).where(Leaf.decision_id.in_(chunk))
            ).all()
            for decision_id, stored in rows:
                if stored is not None and stored != seen[decision_id]:
                    raise DecisionConflictError(
                        decision_id,
                        f"decision {decision_id} is already logged with other content; a "
                        "logged decision cannot be restated",
                    )

    def _after_append(self, size: int) -> None:
        try:
            self.checkpoint_signer.maybe_checkpoint(size)
        except CheckpointChainError:
            pass  # logged and counted by the signer; leaves are kept, nothing is signed
        except Exception:
            # The leaves are committed; the timer signs the checkpoint on its next tick.
            log.exception("checkpoint after append failed; the timer will retry")


def _string_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _event_content(event: DecisionEvent) -> bytes:
    from nexus_contract.canonical import canonical_json

    return canonical_json(event.model_dump(mode="json", exclude_none=True))
