"""Domain errors as HTTP answers: the one table from error class to status and code.

Domain modules raise `NexusError` subclasses that know nothing of HTTP; a
router lets them propagate and this table answers them
(`nexus_runtime.http.install_domain_errors`).
"""

from __future__ import annotations

from nexus_control.access.approval_uses import UnknownApprovalError
from nexus_control.access.approvals import ApprovalError
from nexus_control.access.keyring import KeyringError
from nexus_control.access.tokens import TokenError
from nexus_control.authoring.bundle import BuildError
from nexus_control.authoring.loader import SpecError
from nexus_control.budgets.costs import CostQueryError, SpendScopeError
from nexus_control.budgets.usage import GatewayScopeError, UnknownTenantError, UsageRefusedError
from nexus_control.quality.evaluations import (
    EvaluationRefusedError,
    QualityGateError,
    QualityLapsedError,
    UnknownSubjectError,
)
from nexus_control.registry.registry import RevisionNotFoundError
from nexus_control.registry.revisions import PublishError
from nexus_control.replay.candidate import CandidateError
from nexus_control.replay.evaluator import EvaluatorError
from nexus_control.replay.service import EmptyWindowError, InvalidWindowError
from nexus_control.rollout.changes import DiffPageError
from nexus_control.rollout.engine import (
    ApprovalForbiddenError,
    OverrideReasonError,
    RolloutError,
    RolloutNotFoundError,
)
from nexus_control.rollout.rollouts import NoPolicyInForceError, ShadowGateHeldError
from nexus_control.rollout.shadow import ShadowError, UnknownShadowError
from nexus_control.serving.enforcers import EnforcerRefusedError, RegistrationError, StatusError
from nexus_control.serving.server import StaleStateError
from nexus_runtime.http import ErrorTable
from nexus_runtime.keys.provider import KeyNotFoundError, KeyProviderError

__all__ = ["STATUS_OF"]

STATUS_OF: ErrorTable = {
    RolloutNotFoundError: (404, "not_found"),
    DiffPageError: (400, "invalid_page"),
    RevisionNotFoundError: (404, "not_found"),
    UnknownApprovalError: (404, "unknown_approval"),
    StaleStateError: (404, "not_found"),
    ApprovalForbiddenError: (403, "forbidden"),
    OverrideReasonError: (422, "reason_required"),
    ShadowGateHeldError: (409, "shadow_gate_held"),
    RolloutError: (409, "conflict"),
    NoPolicyInForceError: (409, "no_policy"),
    PublishError: (422, "invalid_bundle"),
    SpecError: (422, "invalid_specs"),
    QualityGateError: (422, "quality_gate"),
    QualityLapsedError: (409, "quality_gate"),
    UnknownSubjectError: (422, "unknown_subject"),
    EvaluationRefusedError: (422, "invalid_evaluation"),
    BuildError: (422, "build_failed"),
    KeyringError: (409, "conflict"),
    KeyNotFoundError: (409, "key_missing"),
    KeyProviderError: (503, "key_provider"),
    UnknownTenantError: (422, "unknown_tenant"),
    UsageRefusedError: (422, "invalid_usage"),
    GatewayScopeError: (403, "forbidden"),
    CostQueryError: (400, "invalid_query"),
    SpendScopeError: (403, "forbidden"),
    ApprovalError: (422, "invalid_request"),
    TokenError: (422, "invalid_request"),
    StatusError: (422, "invalid_status"),
    EnforcerRefusedError: (403, "forbidden"),
    RegistrationError: (409, "conflict"),
    CandidateError: (422, "invalid_candidate"),
    EvaluatorError: (422, "invalid_candidate"),
    InvalidWindowError: (400, "invalid_window"),
    EmptyWindowError: (422, "empty_window"),
    ShadowError: (422, "invalid_shadow"),
    UnknownShadowError: (404, "not_found"),
}
