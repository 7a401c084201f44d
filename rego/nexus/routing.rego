# METADATA
# title: Routing around unhealthy models
# description: |
#   The model a chat completion is routed to: the rollout's choice while it
#   is healthy in this enforcer's region; while it is degraded or down there
#   (data.nexus_state.health, reported by probes), the first of its
#   configured fallbacks that is healthy here, in the tenant's plan and, if
#   priced, within what the tenant's budget and the fallback's own cap have
#   left. With none, the request is refused (503, retry-after) rather than
#   sent to a model that is known to fail. Envoy's locality priorities keep
#   the fallback's traffic inside the enforcer's jurisdiction.
package nexus.routing

import data.nexus.bound
import data.nexus.reason
import data.nexus.request
import data.nexus.rollout

retry_after_s := 30

default health := {}

health := data.nexus_state.health

primary := rollout.model

fallbacks := object.get(data.nexus.config.models, [primary, "fallbacks"], [])

# Read only when the state names something unhealthy: most requests never
# pay for opa.runtime(). Without a region label only reports for every
# region ("*") apply.
default region_name := "*"

region_name := opa.runtime().config.labels.region

# A model's own report wins over its provider's; one for this region over
# one for every region ("*").
first_problem(own, provider, here) := entry if {
	entry := own[here]
} else := entry if {
	entry := own["*"]
} else := entry if {
	entry := provider[here]
} else := entry if {
	entry := provider["*"]
}

problems[m] := entry if {
	health != {}
	some m in array.concat([primary], fallbacks)
	provider := object.get(data.nexus.config.models, [m, "provider"], "")
	entry := first_problem(
		object.get(health, ["models", m], {}),
		object.get(health, ["providers", provider], {}),
		region_name,
	)
}

primary_problem := problems[primary] if {
	request.route == "chat.completions"
	data.nexus.config.models[primary]
}

tenant_plan := data.nexus.config.tenants[request.tenant].plan

# A fallback's worst case from the same token bound nexus.cost uses, and the
# same figures of what the tenant's budget and the model's cap have left.
output_bound(model) := max(bound.requested_output) if {
	count(bound.requested_output) > 0
} else := model.max_output_tokens

left_total := bound.left(
	object.get(bound.spend, ["remaining", "total"], null),
	bound.tenant_budget.monthly_cap_usd,
	object.get(bound.spend, "ratio", 0),
)

affordable contains m if {
	some m in fallbacks
	not data.nexus.config.models[m].price
	bound.unpriced_allowed
}

affordable contains m if {
	some m in fallbacks
	model := data.nexus.config.models[m]
	input_micro_usd := bound.body_bytes * model.price.input_usd_per_mtok
	output_micro_usd := output_bound(model) * model.price.output_usd_per_mtok
	need := ceil(input_micro_usd + output_micro_usd)
	need <= left_total
	within_model_cap(m, need)
}

within_model_cap(m, _) if not bound.tenant_budget.per_model[m]

within_model_cap(m, need) if {
	cap := bound.tenant_budget.per_model[m]
	need <= bound.left(
		object.get(bound.spend, ["remaining", "models", m], null),
		cap,
		object.get(bound.spend, ["models", m], 0),
	)
}

qualified contains m if {
	some m in fallbacks
	data.nexus.config.models[m].plans[tenant_plan]
	not problems[m]
	affordable[m]
}

chosen := [m | some m in fallbacks; qualified[m]][0] if primary_problem

# rollout.model is always defined ("" without x-nexus-model), so model is too.
model := chosen if {
	chosen
} else := primary

# What the decision says about a fallback it took: the decision log keeps it,
# and replay sees the same health (the state bundle's revision is in the
# record).
fallback := {
	"rule": "nexus.models.fallback",
	"message": sprintf(
		"model %q %s (%s) in region %q → %q",
		[primary, primary_problem.status, primary_problem.reason, region_name, chosen],
	),
	"controls": ["SOC2:A1.2", "ISO27001:A.5.30", "ISO42001:A.6.2.6"],
	"from": primary,
	"to": chosen,
	"status": primary_problem.status,
} if {
	chosen
}

# METADATA
# title: No healthy fallback
# description: |
#   The routed model is degraded or down in this region and none of its
#   fallbacks is healthy here, in the tenant's plan and within its budget.
# custom:
#   id: nexus.routing.no_fallback
#   status: 503
# labels:
#   controls:
#     - SOC2:A1.2
#     - ISO27001:A.5.30
#     - ISO42001:A.6.2.6
deny contains reason.build(rego.metadata.rule(), msg) if {
	primary_problem
	not chosen
	msg := sprintf(
		"model %q is %s (%s) and no fallback (%s) is healthy, in plan %q and within budget; %s",
		[
			primary, primary_problem.status, primary_problem.reason,
			concat(", ", fallbacks), tenant_plan, sprintf("retry after %d s", [retry_after_s]),
		],
	)
}
