# METADATA
# title: Worst-case cost
# description: |
#   Budgets that hold under concurrency: a chat completion is admitted only
#   if its worst-case cost fits in what every applicable cap has left, as
#   the state bundle last published it. The worst case is the routed
#   model's price times the request's token bound: input at most one token
#   per body byte, output at most max_tokens (or the model's declared
#   max_output_tokens when the request sends none). Prices are USD per
#   million tokens, so price × tokens is micro-USD, the unit of the state
#   bundle's remaining figures.
package nexus.cost

import data.nexus.bound
import data.nexus.budget
import data.nexus.reason
import data.nexus.request
import data.nexus.routing

model := data.nexus.config.models[routing.model] if request.route == "chat.completions"

priced if model.price

output_bound := max(bound.requested_output) if {
	count(bound.requested_output) > 0
	count(bound.invalid_output) == 0
} else := model.max_output_tokens if {
	count(bound.requested_output) == 0
}

worst_case_micro_usd := ceil(input_micro_usd + output_micro_usd) if {
	input_micro_usd := bound.body_bytes * model.price.input_usd_per_mtok
	output_micro_usd := output_bound * model.price.output_usd_per_mtok
}

# --- What each applicable cap has left ----------------------------------------

remaining[sprintf("tenant %q", [request.tenant])] := bound.left(
	object.get(bound.spend, ["remaining", "total"], null),
	bound.tenant_budget.monthly_cap_usd,
	object.get(bound.spend, "ratio", 0),
)

remaining[sprintf("model %q", [routing.model])] := bound.left(
	object.get(bound.spend, ["remaining", "models", routing.model], null),
	cap,
	object.get(bound.spend, ["models", routing.model], 0),
) if {
	cap := bound.tenant_budget.per_model[routing.model]
}

# The feature is the credential's (bound to its API key or JWT claim), so a
# client cannot pick a scope with more left.
remaining[sprintf("feature %q", [budget.feature])] := bound.left(
	object.get(bound.spend, ["remaining", "features", budget.feature], null),
	cap,
	object.get(bound.spend, ["features", budget.feature], 0),
) if {
	cap := bound.tenant_budget.per_feature[budget.feature]
}

# --- The reservation the enforcer holds -------------------------------------

# Between two state bundles every request is checked against the same
# published figure, so a burst could spend it many times over. The
# enforcer therefore holds each admitted priced chat's worst case against
# each scope it draws on until a state bundle read after the request ended
# includes its real spend (data-plane/opa/README.md). Scope names carry the
# tenant, so one model's or feature's holds never mix across tenants.
tenant_scope := sprintf("tenant %q", [request.tenant])

qualified(scope) := scope if scope == tenant_scope

qualified(scope) := sprintf("%s %s", [tenant_scope, scope]) if scope != tenant_scope

# Only a state document that says when its spend was read (as_of, Unix
# milliseconds) lets the enforcer release a hold, so without it nothing
# is held (a state from an older control plane decides as before).
reservation := {
	"as_of": as_of,
	"worst_case": worst_case_micro_usd,
	"scopes": {qualified(scope): left | some scope, left in remaining},
} if {
	priced
	as_of := data.nexus_state.as_of
	is_number(as_of)
}

usd(micro) := sprintf("$%.6f", [micro / 1000000])

# METADATA
# title: Unpriced model
# description: |
#   The routed model has no price, so no worst case bounds what a request
#   can spend; only a tenant whose budget allows unpriced models may use it.
# custom:
#   id: nexus.cost.model_unpriced
#   status: 403
# labels:
#   controls:
#     - SOC2:A1.1
#     - ISO27001:A.8.6
#     - ISO42001:A.4.5
deny contains reason.build(rego.metadata.rule(), msg) if {
	model
	not priced
	not bound.unpriced_allowed
	msg := sprintf(
		"model %q has no price, and the budget of tenant %q does not allow unpriced models",
		[routing.model, request.tenant],
	)
}

# METADATA
# title: Output bound missing
# description: |
#   A chat completion on a priced model states max_tokens (or
#   max_completion_tokens) unless the model declares max_output_tokens:
#   without it the worst-case cost is unbounded.
# custom:
#   id: nexus.cost.max_tokens_missing
#   status: 400
# labels:
#   controls:
#     - SOC2:A1.1
#     - ISO27001:A.8.6
#     - ISO42001:A.4.5
deny contains reason.build(rego.metadata.rule(), msg) if {
	priced
	count(bound.requested_output) == 0
	not model.max_output_tokens
	msg := sprintf(
		"model %q needs max_tokens in the JSON body: its worst-case cost is checked against the budget",
		[routing.model],
	)
}

# METADATA
# title: Output bound invalid
# description: max_tokens and max_completion_tokens, when sent, are positive integers.
# custom:
#   id: nexus.cost.max_tokens_invalid
#   status: 400
# labels:
#   controls:
#     - SOC2:PI1.2
#     - ISO27001:A.8.6
#     - ISO42001:A.4.5
deny contains reason.build(rego.metadata.rule(), msg) if {
	priced
	count(bound.invalid_output) > 0
	msg := sprintf("%s must be a positive integer", [concat(" and ", bound.output_fields)])
}

# METADATA
# title: Request over its cost cap
# description: |
#   The request's worst-case cost exceeds the tenant's per-request cap
#   (max_request_usd): a smaller max_tokens or prompt would fit.
# custom:
#   id: nexus.cost.request_cap_exceeded
#   status: 400
# labels:
#   controls:
#     - SOC2:A1.1
#     - ISO27001:A.8.6
#     - ISO42001:A.4.5
deny contains reason.build(rego.metadata.rule(), msg) if {
	cap := bound.tenant_budget.max_request_usd
	worst_case_micro_usd > cap * 1000000
	msg := sprintf(
		"the worst-case cost of this request (%s) exceeds the per-request cap of tenant %q (%s)",
		[usd(worst_case_micro_usd), request.tenant, usd(cap * 1000000)],
	)
}

# A scope with nothing left is refused by its cap_reached rule
# (nexus.budget); this one refuses what the cap has not reached yet but a
# request could push past it.

# METADATA
# title: Worst case over the remaining budget
# description: |
#   The request's worst-case cost exceeds what a cap that applies to it
#   (tenant, model or the credential's feature) has left for the period, as
#   last published in the state bundle.
# custom:
#   id: nexus.cost.worst_case_exceeds_remaining
#   status: 429
# labels:
#   controls:
#     - SOC2:A1.1
#     - ISO27001:A.8.6
#     - ISO42001:A.4.5
deny contains reason.build(rego.metadata.rule(), msg) if {
	some scope, left_micro in remaining
	left_micro > 0
	worst_case_micro_usd > left_micro
	msg := sprintf(
		"the worst-case cost of this request (%s) exceeds what the budget of %s has left (%s)",
		[usd(worst_case_micro_usd), scope, usd(left_micro)],
	)
}
