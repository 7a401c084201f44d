"""Wire names: what the control plane, the enforcers and the audit service must spell alike.

Policy authors, enforcer configs, Envoy routes, the Rego library and the audit
intake all depend on these strings; each is written here once. The Rego side
(`rego/README.md`) documents the same names for policy authors.
"""

from __future__ import annotations

__all__ = [
    "APPROVAL_HEADER",
    "BUDGET_WARNING_HEADER",
    "BUNDLES",
    "BUNDLE_CONTENT_TYPE",
    "DATA_CLASS_HEADER",
    "DECISION_ID_HEADER",
    "DECISION_ID_METADATA_KEY",
    "DECISION_PATH",
    "DECISION_QUERY",
    "DURABLE_LOG_PLUGIN",
    "ENFORCER_HEADER",
    "EXPECTED_REVISION_HEADER",
    "EXT_AUTHZ_METADATA_NAMESPACE",
    "EXT_AUTHZ_PLUGIN",
    "FEATURE_HEADER",
    "GATEWAY_ROUTES",
    "LABELS_PATH",
    "MODEL_HEADER",
    "OPA_API_PREFIX",
    "POLICY_BUNDLE",
    "POLICY_ROOTS",
    "PROMPT_HEADER",
    "PROMPT_VERSION_HEADER",
    "RATELIMIT_DOMAIN",
    "RATELIMIT_METADATA_KEY",
    "RECEIPT_PATH",
    "RECEIPT_REASONS",
    "RECEIPT_SHED_DELIVERED",
    "RECORD_CREATED_HEADER",
    "RECORD_TOKEN_HEADER",
    "REQUEST_ID_HEADER",
    "ROUTE_MODEL_HEADER",
    "SHADOW_BUNDLE",
    "SHADOW_CHANGES",
    "SHADOW_PATH",
    "SHED_REASONS",
    "SHED_UNANSWERED",
    "SOURCES_CONTENT_TYPE",
    "STATE_BUNDLE",
    "STATE_ROOTS",
    "SUBJECT_HEADER",
    "TENANT_HEADER",
    "UNTRUSTED_FACT_HEADERS",
    "USAGE_TOKENS_HEADER",
    "bundle_resource",
    "shadow_resource",
]

# --- bundles -------------------------------------------------------------------

POLICY_BUNDLE = "nexus"
"""The policy bundle's name: its resource path segment, and its key in OPA's status."""
STATE_BUNDLE = "nexus-state"
"""The state bundle (spend ratios, disabled tenants), long-polled beside the policy."""
BUNDLES = (POLICY_BUNDLE, STATE_BUNDLE)
POLICY_ROOTS = ("nexus", "system/log")
"""Roots of the policy bundle: the library and compiled data, and the log mask policy."""
STATE_ROOTS = ("nexus_state",)
"""Roots of the state bundle; disjoint from POLICY_ROOTS so OPA holds both."""
BUNDLE_CONTENT_TYPE = "application/vnd.openpolicyagent.bundles"
"""Without it on every bundle answer OPA falls back from long polling to plain polling."""
OPA_API_PREFIX = "/v1/opa"
"""Base path of the enforcer-facing API: OPA's services point here."""


def bundle_resource(region: str, bundle: str) -> str:
    """The ``resource`` an enforcer of ``region`` polls for ``bundle`` (under OPA_API_PREFIX)."""
    return f"bundles/{region}/{bundle}"


# --- the gateway's routes --------------------------------------------------------

GATEWAY_ROUTES = (
    "chat.completions",
    "tools.invoke",
    "chats.read",
    "chats.delete",
    "subjects.erase",
)
"""The gateway's routes by name (``nexus.request.route``, rego/nexus/request.rego): what rate
limits and SLOs select, and what a usage report books its cost to (``endpoint``)."""

SHADOW_BUNDLE = "nexus-shadow"
"""A region's shadow candidate: a policy revision its enforcers evaluate beside the active
one, off the request path (the plugin's ``shadow`` block), never in force."""


def shadow_resource(region: str) -> str:
    """The ``resource`` an enforcer of ``region`` polls for its shadow candidate."""
    return f"shadow/{region}/{POLICY_BUNDLE}"


# --- the decision ---------------------------------------------------------------

DECISION_PATH = "nexus/envoy/authz/decision"
"""The ext_authz plugin's ``path``: the rule Envoy's Check is decided by."""
DECISION_QUERY = "data." + DECISION_PATH.replace("/", ".")
LABELS_PATH = "nexus/capability/labels"
"""The ext_authz plugin's ``labels-path``: the route, tool and capability of a request the
policy did not decide (shed, refused by the plugin), for the decision metrics."""
EXT_AUTHZ_PLUGIN = "envoy_ext_authz_grpc"
"""The plugin's key under ``plugins`` in OPA's config (upstream opa-envoy-plugin's key)."""
DURABLE_LOG_PLUGIN = "nexus_durable_log"
"""Our OPA build's durable decision-log plugin: its key under ``plugins`` and the
``decision_logs.plugin`` that routes decision events to it."""
EXT_AUTHZ_METADATA_NAMESPACE = "envoy.filters.http.ext_authz"
DECISION_ID_METADATA_KEY = "decision_id"
"""Where the plugin puts each decision's id in Envoy's dynamic metadata."""
RATELIMIT_METADATA_KEY = "ratelimit"
"""Beside the decision id: {limit id: bucket} for every rate limit an allowed request counts
against (``nexus.ratelimit.buckets``); Envoy's rate limit filters read it."""
RATELIMIT_DOMAIN = "nexus"
"""The envoyproxy/ratelimit domain the shared limits live in."""
USAGE_TOKENS_HEADER = "x-nexus-usage-tokens"
"""Set by the gateway on a chat completion's response: the LLM tokens the call used, which
Envoy adds to the caller's tokens-per-minute buckets once the response is done."""

SHED_REASONS = ("queue_timeout", "deadline", "cancelled", "abandoned")
"""Why the ext_authz plugin shed a Check without a policy answer (its decision log's
``result.shed``): no evaluation slot in time; the gRPC deadline passed first; Envoy
cancelled first; Envoy gave up while the policy ran."""
SHED_UNANSWERED = frozenset({"deadline", "cancelled", "abandoned"})
"""The shed reasons whose refusal never reached the client: Envoy had answered (its
ext_authz timeout) or gone before the enforcer did. Such a leaf is a request Envoy asked
about, not a decision anyone received."""

RECEIPT_PATH = "nexus/receipt"
"""The decision-log ``path`` of a delivery receipt: the ext_authz plugin answered a decision
that Envoy's access log says the client did not get as sent. Its ``result`` is
``schemas/receipt/receipt.schema.json``; the intake stores it as a receipt leaf."""
RECEIPT_REASONS = ("ext_authz_error", "client_gone", "other_answer")
"""Why a receipt says undelivered: Envoy answered its ext_authz failure status (its timeout
fired before the answer arrived); the client left and nothing went upstream; Envoy answered
the client something else."""
RECEIPT_SHED_DELIVERED = "shed_answer_delivered"
"""The reason of the one receipt that says *delivered*: the plugin shed a Check presuming
Envoy had given up (its deadline had passed by the plugin's clock, or passed while the policy
ran), yet Envoy applied that refusal: its own timer had not fired yet (a busy Envoy fires it
late). The shed leaf alone would count a refusal the client got as unanswered; this receipt,
from Envoy's access log, corrects it."""
SHADOW_PATH = "nexus/shadow"
"""The decision-log ``path`` of a shadow record: the ext_authz plugin evaluated a decision it
had answered again against the region's shadow candidate. Its ``result`` is
``schemas/shadow/shadow.schema.json``; the intake stores it as a shadow leaf."""
SHADOW_CHANGES = (
    "unchanged",
    "allow_to_deny",
    "deny_to_allow",
    "status_changed",
    "headers_changed",
    "error",
)
"""A shadow outcome's change from the active answer to the candidate's: the replay report's
buckets (a live sample is always replayable) and ``nexus_shadow_decisions_total``'s labels."""
REQUEST_ID_HEADER = "x-request-id"
"""Envoy's request id: the key that joins a Check to Envoy's access log entry."""

# --- headers ----------------------------------------------------------------------

ENFORCER_HEADER = "x-nexus-enforcer"
"""An enforcer's stable id, sent by OPA on every poll, status report and log upload."""
DECISION_ID_HEADER = "x-nexus-decision-id"
"""Added by Envoy upstream and to the response: the gateway, the log and the leaf share it."""
TENANT_HEADER = "x-nexus-tenant"
SUBJECT_HEADER = "x-nexus-subject"
MODEL_HEADER = "x-nexus-model"
PROMPT_HEADER = "x-nexus-prompt"
FEATURE_HEADER = "x-nexus-feature"
"""Never trusted: the feature comes from the credential (key binding or JWT claim)."""
APPROVAL_HEADER = "x-nexus-approval"
DATA_CLASS_HEADER = "x-nexus-data-class"
"""Never trusted: the data class comes from the record token."""
RECORD_CREATED_HEADER = "x-nexus-record-created"
"""Never trusted: the creation time comes from the record token."""
RECORD_TOKEN_HEADER = "x-nexus-record-token"  # noqa: S105 - a header name, not a secret
"""A short-lived ES256 JWS from the record's store: tenant, record id, data class, created_at."""
ROUTE_MODEL_HEADER = "x-nexus-route-model"
PROMPT_VERSION_HEADER = "x-nexus-prompt-version"
BUDGET_WARNING_HEADER = "x-nexus-budget-warning"
UNTRUSTED_FACT_HEADERS = (
    FEATURE_HEADER,
    DATA_CLASS_HEADER,
    RECORD_CREATED_HEADER,
    "x-nexus-record-class",
    "x-nexus-record-tenant",
    "x-nexus-record-id",
    ROUTE_MODEL_HEADER,
    PROMPT_VERSION_HEADER,
)
"""Headers a client may send that would claim a fact (or a decision's output): Envoy strips
them before ext_authz and the upstream see the request. The policy decides on the credential,
compiled data, the state bundle and signed tokens only (README, "Which facts the policy trusts").
"""
EXPECTED_REVISION_HEADER = "x-nexus-expected-revision"
"""Sent with published sources: the revision the author's build computed (refused if it differs)."""
SOURCES_CONTENT_TYPE = "application/vnd.nexus.sources+gzip"
"""What ``POST /v1/bundles`` takes: the bundle's sources, never a built archive."""
