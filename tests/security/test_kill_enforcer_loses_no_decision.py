"""Attack: kill -9 the enforcer's OPA (and take the intake away) to lose decisions.

A real Envoy asks our ext_authz plugin in a real OPA whose decision log is the
durable plugin (``nexus_durable_log``), shipping to a real audit service. Under
steady load OPA is killed with SIGKILL mid-run and restarted, and the intake
is down for a few seconds. Every answer Envoy gave with a decision id must be a
leaf in the log, exactly once (a decision the log cannot record is refused,
not made).
"""

from __future__ import annotations

import threading
import time

import pytest

from nexus_audit.service import AuditLog
from tests.fixtures.durable_stack import Intake, logged_ids
from tests.fixtures.gateway_opa import put_empty_state
from tests.fixtures.gateway_stack import GatewayStack

pytestmark = [pytest.mark.opa]

LOAD_S = 9.0
KILL_AT_S = 2.5
INTAKE_DOWN_AT_S = 5.0
INTAKE_DOWN_S = 3.0
SENDERS = 2
PAUSE_S = 0.02
"""Between one sender's requests: two senders offer well under 100 requests/s."""
LAND_TIMEOUT_S = 30.0


class Load:
    """Senders through Envoy, keeping every decision id Envoy answered with."""

    def __init__(self, stack: GatewayStack) -> None:
        self.stack = stack
        self.answered: list[str] = []
        self.refused_without_id = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(i,)) for i in range(SENDERS)]

    def _send(self, sender: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            chat = {"x-nexus-tenant": "acme", **self.stack.record_headers("c-1001")}
            try:
                if (n + sender) % 2:
                    answer = self.stack.send(
                        "GET", "/v1/chats/c-1001", key="acme-chat", headers=chat
                    )
                else:
                    answer = self.stack.send(
                        "GET", "/v1/unknown", key=None, headers={"x-nexus-tenant": "acme"}
                    )
            except OSError:
                # Envoy itself stays up; a reset during the kill is not an answer.
                continue
            with self._lock:
                if answer.decision_id:
                    self.answered.append(answer.decision_id)
                else:
                    self.refused_without_id += 1
            time.sleep(PAUSE_S)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


@pytest.mark.parametrize("durable_stack", ["fsync", "write"], indirect=True)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_kill_enforcer_loses_no_decision(
    durable_stack: GatewayStack, intake: Intake, audit: AuditLog
) -> None:
    opa = durable_stack.opa
    started = time.monotonic()
    with Load(durable_stack) as load:
        time.sleep(KILL_AT_S)
        opa.kill()  # SIGKILL: whatever OPA held only in memory is gone
        opa.start_and_wait(bundles=False)
        put_empty_state(opa.url)
        time.sleep(max(0.0, INTAKE_DOWN_AT_S - (time.monotonic() - started)))
        intake.stop()
        time.sleep(INTAKE_DOWN_S)
        intake.start()
        time.sleep(max(0.0, LOAD_S - (time.monotonic() - started)))
    answered = load.answered
    assert len(answered) > 50, "the load never got going"
    assert len(set(answered)) == len(answered)

    deadline = time.monotonic() + LAND_TIMEOUT_S
    while len(logged := logged_ids(audit)) < len(answered) and time.monotonic() < deadline:
        time.sleep(0.25)
    # Every decision Envoy answered with, each once: none lost to the kill or
    # the outage, none doubled by re-shipping a segment after the crash.
    assert len(logged) == len(set(logged)), "a decision is in the log twice"
    lost = set(answered) - set(logged)
    assert not lost, f"{len(lost)} of {len(answered)} answered decisions are not in the log"
    # A decision recorded whose answer never reached the client (in flight at
    # the kill, or past Envoy's timeout) is the safe direction; each is one of
    # the requests the client got no decision id for.
    unanswered = set(logged) - set(answered)
    assert len(unanswered) <= load.refused_without_id + SENDERS
