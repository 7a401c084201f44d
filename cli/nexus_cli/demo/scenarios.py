"""The demo's gateway requests, one per concern, as a table: who asks what, and what must happen.

`SCENARIOS` runs in order through Envoy; each row names the throwaway key it
sends (`DEMO_KEYS`), the tenant header, the request, and the status the policy
must answer. A row may ask for a human approval of its tool call first, or
give the age of the chat record it reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nexus_control.authoring.credentials import KeyGrant

__all__ = ["BUDGET_STEPS", "DEMO_KEYS", "SCENARIOS", "Approval", "BudgetStep", "Scenario"]

DEMO_KEYS: tuple[KeyGrant, ...] = (
    KeyGrant("demo-acme-chat", "acme", ("chat-user",)),
    KeyGrant("demo-acme-agent", "acme", ("agent", "agent-privileged")),
    KeyGrant("demo-acme-dpo", "acme", ("dpo",)),
    KeyGrant("demo-globex-chat", "globex", ("chat-user",)),
    KeyGrant("demo-umbrella-chat", "umbrella", ("chat-user",)),
    KeyGrant("demo-hooli-chat", "hooli", ("chat-user",)),
    KeyGrant("demo-stark-agent", "stark", ("agent", "chat-user", "data-steward")),
    KeyGrant("demo-wayne-chat", "wayne", ("chat-user",)),
    KeyGrant("demo-vandelay-chat", "vandelay", ("chat-user",)),
)
"""Throwaway keys bound to the example bundle's roles; only their hashes reach the bundle."""

CHAT = "/v1/chat/completions"
SEARCH = "/v1/tools/web-search:invoke"
REFUND = "/v1/tools/payment-refund:invoke"
REFUND_ARGUMENTS: Mapping[str, Any] = {
    "paymentId": "pay_8812",
    "amountCents": 1999,
    "currency": "EUR",
}


@dataclass(frozen=True)
class Approval:
    """A human approval issued (by the control plane's approval key) before the request."""

    tenant: str
    tool: str
    arguments: Mapping[str, Any]
    subject: str = "apikey:demo-acme-agent"
    """The one caller the approval is for, as the policy names it."""
    approver: str = "carol@acme.example"
    ttl_s: int = 120


@dataclass(frozen=True)
class Scenario:
    name: str
    key: str | None
    """A `DEMO_KEYS` id, or None to send no credential."""
    tenant: str
    method: str
    path: str
    expected: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None
    approval: Approval | None = None
    """Issue this approval and send it (``x-nexus-approval``)."""
    record: tuple[str, int] | None = None
    """The path's record as the chat store states it (data class, age in days): sent as
    its signed x-nexus-record-token, the only source of those facts the policy trusts."""


def _chat(model: str, **extra: str) -> dict[str, str]:
    return {"x-nexus-model": model, **extra}


_REFUND_APPROVAL = Approval("acme", "payment-refund", REFUND_ARGUMENTS)

# fmt: off
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("chat, rollout picks the model", "demo-acme-chat", "acme", "POST", CHAT, 200,
             _chat("chat-default"), {"messages": [{"role": "user", "content": "hello"}]}),
    Scenario("no credential", None, "acme", "POST", CHAT, 401, _chat("gpt-4o")),
    Scenario("key of another tenant", "demo-acme-chat", "globex", "POST", CHAT, 403,
             _chat("gpt-4o")),
    Scenario("US tenant in an EU region", "demo-globex-chat", "globex", "POST", CHAT, 403,
             _chat("gpt-4o")),
    Scenario("suspended tenant", "demo-wayne-chat", "wayne", "POST", CHAT, 403, _chat("gpt-4o")),
    Scenario("free plan asks an enterprise model", "demo-umbrella-chat", "umbrella", "POST", CHAT,
             403, _chat("gpt-4.1")),
    Scenario("override routes stark to gpt-4.1", "demo-stark-agent", "stark", "POST", CHAT, 200,
             _chat("chat-default", **{"x-nexus-prompt": "support-agent",
                                      "x-nexus-subject": "customer-17"})),
    Scenario("retired prompt version", "demo-stark-agent", "stark", "POST", CHAT, 400,
             _chat("gpt-4o", **{"x-nexus-prompt": "support-agent@1"})),
    Scenario("chat user may not call tools", "demo-acme-chat", "acme", "POST", SEARCH, 403,
             body={"arguments": {"query": "weather"}}),
    Scenario("agent calls a low-risk tool", "demo-acme-agent", "acme", "POST", SEARCH, 200,
             body={"arguments": {"query": "weather"}}),
    Scenario("arguments break the tool's schema", "demo-acme-agent", "acme", "POST", SEARCH, 400,
             body={"arguments": {"q": 1}}),
    Scenario("critical tool without approval", "demo-acme-agent", "acme", "POST", REFUND, 403,
             body={"arguments": REFUND_ARGUMENTS}),
    Scenario("critical tool with a human approval", "demo-acme-agent", "acme", "POST", REFUND,
             200, body={"arguments": REFUND_ARGUMENTS}, approval=_REFUND_APPROVAL),
    Scenario("approval replayed for other arguments", "demo-acme-agent", "acme", "POST", REFUND,
             403, body={"arguments": {**REFUND_ARGUMENTS, "amountCents": 99999}},
             approval=_REFUND_APPROVAL),
    Scenario("read a 10-day-old chat", "demo-acme-chat", "acme", "GET", "/v1/chats/c-1001", 200,
             record=("chat-history", 10)),
    Scenario("read past acme's 30-day retention", "demo-acme-chat", "acme", "GET",
             "/v1/chats/c-0007", 410, record=("chat-history", 45)),
    Scenario("a client's header cannot make an old chat fresh", "demo-acme-chat", "acme", "GET",
             "/v1/chats/c-0008", 410, {"x-nexus-record-created": "2026-01-01T00:00:00Z",
                                       "x-nexus-data-class": "tool-outputs"},
             record=("chat-history", 45)),
    Scenario("DPO erases a data subject", "demo-acme-dpo", "acme", "DELETE", "/v1/subjects/subj-42",
             200),
    Scenario("chat user may not erase", "demo-hooli-chat", "hooli", "DELETE",
             "/v1/subjects/subj-42", 403),
    Scenario("delete a file under a legal hold", "demo-stark-agent", "stark", "DELETE",
             "/v1/chats/c-77", 403, record=("uploaded-files", 3)),
    Scenario("delete a chat: its class is not held", "demo-stark-agent", "stark", "DELETE",
             "/v1/chats/c-78", 200, record=("chat-history", 3)),
    Scenario("unknown route", "demo-acme-chat", "acme", "GET", "/v1/admin", 404),
)
# fmt: on


@dataclass(frozen=True)
class BudgetStep:
    """Usage reported for a tenant, then the request that must now meet its cap."""

    name: str
    key: str
    tenant: str
    model: str
    reports_usd: tuple[float, ...]
    expected: int
    wait_for: str
    """What to wait for after the reports: ``warning`` (the header), ``refusal``, ``disabled``."""
    repeat_first: bool = False
    """Send the first report twice with one request id: it must count once."""
    feature: str | None = None
    """The feature the usage is booked to (one the tenant caps or binds to a key)."""


# fmt: off
BUDGET_STEPS: tuple[BudgetStep, ...] = (
    BudgetStep("over the soft cap: warned, allowed", "demo-acme-chat", "acme", "gpt-4o",
               (41_000.0,), 200, "warning", feature="support-chat"),
    BudgetStep("over the hard cap: refused", "demo-hooli-chat", "hooli", "gpt-4o",
               (7_900.0, 150.0), 429, "refusal"),
    BudgetStep("tenant disabled at its hard cap", "demo-umbrella-chat", "umbrella", "gpt-4o-mini",
               (30.0, 25.0), 403, "disabled", repeat_first=True),
)
# fmt: on
