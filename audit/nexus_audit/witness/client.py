"""The log's side of C2SP tlog-witness: submit each checkpoint to the witnesses, keep cosignatures.

For each witness the log remembers the size it last cosigned (``witness_sizes``)
and sends ``old <that size>`` with the RFC 9162 consistency proof from it. A
409 answer names the witness's size: the log proves consistency from there and
tries once more (a witness that restarted, or one the log has not seen yet,
converges in one round trip). Answers are verified with the witness's key
before they are kept; a witness that answers 422 or 409 without a size has
refused the log's history and is reported loudly.

Submissions run in parallel, so collecting k cosignatures costs about one
round trip to the slowest of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_audit.cosignature import CosignatureError, CosignerKey, verified_cosignatures
from nexus_audit.database import AuditDatabase
from nexus_audit.policy import PolicyWitness, TlogPolicy
from nexus_audit.tables import WitnessSize
from nexus_audit.witness.protocol import (
    SIZE_MEDIA_TYPE,
    AddCheckpoint,
    WitnessProtocolError,
    parse_size_body,
)

__all__ = [
    "DEFAULT_WITNESS_TIMEOUT_S",
    "Prover",
    "WitnessOutcome",
    "WitnessPool",
    "Witnessed",
]

log = logging.getLogger("nexus.audit")

DEFAULT_WITNESS_TIMEOUT_S = 5.0

Prover = Callable[[int, int], tuple[bytes, ...]]
"""(old size, new size) → the consistency proof from the log's storage."""


@dataclass(frozen=True)
class WitnessOutcome:
    witness: str
    line: str | None
    error: str | None
    seconds: float


@dataclass(frozen=True)
class Witnessed:
    """What one round collected: the cosigned note, who cosigned, and whether the quorum holds."""

    note: str
    cosigned_note: str
    cosigners: tuple[str, ...]
    quorum_met: bool
    outcomes: tuple[WitnessOutcome, ...]
    seconds: float
    quorum_seconds: float | None = None


@dataclass
class WitnessPool:
    """The witnesses a log submits to, under a tlog-policy quorum."""

    policy: TlogPolicy
    db: AuditDatabase
    timeout_s: float = DEFAULT_WITNESS_TIMEOUT_S
    headers: dict[str, str] = field(default_factory=dict)
    _clients: dict[str, httpx.Client] = field(default_factory=dict, init=False, repr=False)
    _executor: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def witnesses(self) -> tuple[PolicyWitness, ...]:
        return tuple(w for w in self.policy.witnesses if w.url)

    @property
    def keys(self) -> tuple[CosignerKey, ...]:
        return tuple(w.key for w in self.policy.witnesses)

    def submit(self, note: str, size: int, prove: Prover) -> Witnessed:
        """Submit the checkpoint ``note`` (of ``size``) to every witness; gather cosignatures."""
        started = time.perf_counter()
        witnesses = self.witnesses
        executor = self._pool(len(witnesses))
        futures = {
            executor.submit(self._submit_one, witness, note, size, prove, started): witness
            for witness in witnesses
        }
        done, _ = wait(futures, timeout=self.timeout_s + 1)
        outcomes = []
        for future, witness in futures.items():
            if future in done:
                outcomes.append(future.result())
            else:
                outcomes.append(WitnessOutcome(witness.name, None, "no answer in time", -1.0))
        cosigned = [o.witness for o in outcomes if o.line is not None]
        if cosigned:
            # One writer, after the round: the database sees no concurrent upgrades.
            with self.db.session() as session:
                for name in cosigned:
                    _store_size(session, name, size)
        lines = sorted(o.line for o in outcomes if o.line is not None)
        cosigned_note = note + "".join(lines)
        cosigners = tuple(sorted(o.witness for o in outcomes if o.line is not None))
        quorum = self.policy.satisfied_by(set(cosigners))
        quorum_seconds = None
        if quorum:
            times = sorted(o.seconds for o in outcomes if o.line is not None)
            for count in range(1, len(times) + 1):
                if self.policy.satisfied_by(_first(outcomes, count)):
                    quorum_seconds = times[count - 1]
                    break
        for outcome in outcomes:
            if outcome.error is not None:
                log.warning(
                    "witness did not cosign",
                    extra={"witness": outcome.witness, "tree_size": size, "error": outcome.error},
                )
        return Witnessed(
            note,
            cosigned_note,
            cosigners,
            quorum,
            tuple(outcomes),
            time.perf_counter() - started,
            quorum_seconds,
        )

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None

    # --- one witness ---------------------------------------------------------

    def _submit_one(
        self, witness: PolicyWitness, note: str, size: int, prove: Prover, started: float
    ) -> WitnessOutcome:
        try:
            old = self._known_size(witness.name)
            if old > size:
                old = 0
            for _attempt in range(2):
                proof = prove(old, size) if 0 < old < size else ()
                response = self._client(witness.name).post(
                    witness.url.rstrip("/") + "/add-checkpoint",  # type: ignore[union-attr]
                    content=AddCheckpoint(old, proof, note).encode(),
                )
                if response.status_code == 200:
                    line = self._verified_line(witness, note, response.text)
                    return WitnessOutcome(witness.name, line, None, time.perf_counter() - started)
                if response.status_code == 409 and response.headers.get(
                    "content-type", ""
                ).startswith(SIZE_MEDIA_TYPE):
                    their = parse_size_body(response.content)
                    if their > size or their == old:
                        return self._refused(
                            witness, f"409: the witness holds size {their}, ahead of {size}"
                        )
                    old = their
                    continue
                return self._refused(
                    witness, f"{response.status_code}: {response.text.strip()[:200]}"
                )
            return self._refused(witness, "the witness kept answering 409")
        except (httpx.HTTPError, WitnessProtocolError, CosignatureError, OSError) as exc:
            return WitnessOutcome(witness.name, None, f"{type(exc).__name__}: {exc}", -1.0)

    def _refused(self, witness: PolicyWitness, problem: str) -> WitnessOutcome:
        if problem.startswith(("409", "422")):
            log.critical(
                "a witness refused the log's checkpoint",
                extra={"witness": witness.name, "error": problem},
            )
        return WitnessOutcome(witness.name, None, problem, -1.0)

    def _verified_line(self, witness: PolicyWitness, note: str, body: str) -> str:
        found = verified_cosignatures(note + body, [witness.key])
        cosignature = found.get(witness.key.name)
        if cosignature is None:
            raise CosignatureError(
                f"the answer of witness {witness.name} holds no cosignature by its key"
            )
        return cosignature.line

    def _known_size(self, name: str) -> int:
        with self.db.session() as session:
            row = session.get(WitnessSize, name)
            return 0 if row is None else row.size

    def _client(self, name: str) -> httpx.Client:
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                client = httpx.Client(timeout=self.timeout_s, headers=self.headers)
                self._clients[name] = client
            return client

    def _pool(self, size: int) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=max(1, size), thread_name_prefix="audit-witness"
                )
            return self._executor


def _first(outcomes: Sequence[WitnessOutcome], count: int) -> set[str]:
    """The names of the ``count`` fastest witnesses that cosigned."""
    cosigned = sorted((o for o in outcomes if o.line is not None), key=lambda o: o.seconds)
    return {o.witness for o in cosigned[:count]}


def _store_size(session: Session, name: str, size: int) -> None:
    row = session.scalar(select(WitnessSize).where(WitnessSize.witness == name))
    now = datetime.now(UTC)
    if row is None:
        session.add(WitnessSize(witness=name, size=size, updated_at=now))
    elif size > row.size:
        row.size = size
        row.updated_at = now
