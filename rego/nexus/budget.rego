# METADATA
# title: Budgets
# description: |
#   Spend caps per budget window from the state bundle (data.nexus_state):
#   a disabled tenant is refused everywhere, a reached cap refuses metered
#   routes, and a soft cap adds a warning header. The control plane
#   publishes each tenant's spend in its window open now, and when that
#   window ends (resets), which a refusal's retry-after reads. Until the
#   state bundle has been loaded no spend is known: metered routes are
#   refused (fail closed), unless the tenant's budget says before_state =
#   allow.
package nexus.budget

import data.nexus.identity
import data.nexus.reason
import data.nexus.request
import data.nexus.routing

# Only these routes spend money upstream.
metered_routes := {"chat.completions", "tools.invoke"}

metered if metered_routes[request.route]

spend := data.nexus_state.spend[request.tenant]

# The credential's feature (identity.feature), never a client's header.
feature := identity.feature if identity.feature != ""

# Every state document names its period; before the state bundle is
# activated data.nexus_state holds nothing.
state_loaded if is_string(data.nexus_state.period)

fails_open if data.nexus.config.tenants[request.tenant].budget.before_state == "allow"

# While the tenant's spend anomaly is held, its onAnomaly action may lower
# the soft cap (a finding is a reason to warn sooner, not to refuse).
held := data.nexus_state.anomaly_holds[request.tenant]

on_anomaly := data.nexus.config.tenants[request.tenant].budget.on_anomaly if held

soft_cap_ratio := on_anomaly.lower_soft_cap_to_ratio

soft_cap_ratio := data.nexus.config.tenants[request.tenant].budget.soft_cap_ratio if {
	not on_anomaly.lower_soft_cap_to_ratio
}

# Any entry disables the tenant, whatever its shape; the reason is a courtesy.
default disabled_reason := "budget exhausted"

disabled_reason := text if {
	text := data.nexus_state.disabled[request.tenant].reason
	is_string(text)
}

# Seconds until the tenant's budget window resets, at least 1: what a
# refusal that the reset lifts puts in retry-after. Undefined when the
# state bundle names no reset for the tenant (one built before windows).
until_reset_s := max([1, ceil((time.parse_rfc3339_ns(resets) - time.now_ns()) / 1e9)]) if {
	resets := data.nexus_state.resets[request.tenant]
	is_string(resets)
}

# The refusals a window's reset lifts: reached caps, and a disabled tenant
# (disabled for its window only).
lifted_by_reset := {
	"nexus.budget.tenant_cap_reached",
	"nexus.budget.model_cap_reached",
	"nexus.budget.feature_cap_reached",
	"nexus.budget.tenant_disabled",
	"nexus.cost.worst_case_exceeds_remaining",
}

# Whole percents are precise enough for a person reading a message or header.
percent(ratio) := sprintf("%v%%", [round(ratio * 100)])

# METADATA
# title: Tenant disabled
# description: |
#   The control plane disabled the tenant (its hard cap was reached with
#   on_hard_cap = disable); every route is refused until its budget window
#   resets.
# custom:
#   id: nexus.budget.tenant_disabled
#   status: 403
# labels:
#   controls:
#     - SOC2:A1.1
#     - ISO27001:A.8.6
#     - ISO42001:A.4.5
deny contains reason.build(rego.metadata.rule(), msg) if {
	data.nexus_state.disabled[request.tenant]
	msg := sprintf("tenant %q is disabled: %s", [request.tenant, disabled_reason])
}

# METADATA
# title: Spend not known yet
# description: |
#   The enforcer has not loaded the state bundle, so the tenant's spend is
#   unknown; metered routes are refused until it is (unless the tenant's
#   budget allows serving before state).
# custom:
#   id: nexus.budget.state_unknown
#   status: 503
# labels:
#   controls:
#     - SOC2:A1.1
#     - ISO27001:A.8.6
#     - ISO42001:A.4.5
deny contains reason.build(rego.metadata.rule(), msg) if {
	metered
	not state_loaded
	not fails_open
	msg := sprintf(
		"the spend of tenant %q is not known yet (no state bundle loaded); metered routes wait for it",
		[request.tenant],
	)
}

# METADATA
# title: Tenant budget exhausted
# description: The tenant's spend in its budget window has reached its cap.
# custom:
#   id: nexus.budget.tenant_cap_reached
#   status: 429
# labels:
#   controls:
#     - SOC2:A1.1
#     - ISO27001:A.8.6
#     - ISO42001:A.4.5
deny contains reason.build(rego.metadata.rule(), msg) if {
	metered
	spend.ratio >= 1
	msg := sprintf("tenant %q has used %s of its budget for this window", [request.tenant, percent(spend.ratio)])
}

# METADATA
# title: Model budget exhausted
# description: The tenant's spend on the routed model has reached its cap for the period.
# custom:
#   id: nexus.budget.model_cap_reached
#   status: 429
# labels:
#   controls:
#     - SOC2:A1.1
#     - ISO27001:A.8.6
#     - ISO42001:A.4.5
deny contains reason.build(rego.metadata.rule(), msg) if {
	request.route == "chat.completions"
	ratio := spend.models[routing.model]
	ratio >= 1
	msg := sprintf("tenant %q has used %s of its budget for model %q", [request.tenant, percent(ratio), routing.model])
}

# METADATA
# title: Feature budget exhausted
# description: The tenant's spend booked to the credential's feature has reached its cap for the period.
# custom:
#   id: nexus.budget.feature_cap_reached
#   status: 429
# labels:
#   controls:
#     - SOC2:A1.1
#     - ISO27001:A.8.6
#     - ISO42001:A.4.5
deny contains reason.build(rego.metadata.rule(), msg) if {
	metered
	ratio := spend.features[feature]
	ratio >= 1
	msg := sprintf("tenant %q has used %s of its budget for feature %q", [request.tenant, percent(ratio), feature])
}

# METADATA
# title: Costly model held after a spend anomaly
# description: |
#   The detector found a spend anomaly for the tenant, and its budget's
#   onAnomaly action holds models priced above a threshold: their chats are
#   refused until an approver has looked and released the hold (POST
#   /v1/budgets/anomaly-holds/{tenant}/release). Cheaper models still serve.
# custom:
#   id: nexus.budget.anomaly_hold
#   status: 403
# labels:
#   controls:
#     - SOC2:A1.1
#     - SOC2:CC7.2
#     - ISO27001:A.8.16
deny contains reason.build(rego.metadata.rule(), msg) if {
	request.route == "chat.completions"
	ceiling := on_anomaly.hold_models_above_usd_per_mtok
	price := data.nexus.config.models[routing.model].price
	max([price.input_usd_per_mtok, price.output_usd_per_mtok]) > ceiling
	msg := sprintf(
		"tenant %q has a spend anomaly on hold (%s on %s): model %q costs over $%v per million tokens %s",
		[request.tenant, held.kind, held.day, routing.model, ceiling, "and needs an approver's release first"],
	)
}

warnings contains sprintf("tenant=%s", [percent(spend.ratio)]) if {
	metered
	spend.ratio >= soft_cap_ratio
}

warnings contains sprintf("model:%s=%s", [routing.model, percent(ratio)]) if {
	request.route == "chat.completions"
	ratio := spend.models[routing.model]
	ratio >= soft_cap_ratio
}

warnings contains sprintf("feature:%s=%s", [feature, percent(ratio)]) if {
	metered
	ratio := spend.features[feature]
	ratio >= soft_cap_ratio
}

# The x-nexus-budget-warning value: every scope past the tenant's soft
# cap, sorted so that equal states give equal headers.
default warning := ""

warning := concat(", ", sort(warnings)) if count(warnings) > 0
