# METADATA
# title: Models
# description: |
#   A chat completion must name a model that exists once rollout routing
#   has resolved any alias, and the tenant's plan must include it.
package nexus.models

import data.nexus.reason
import data.nexus.request
import data.nexus.routing

model := data.nexus.config.models[routing.model]

tenant := data.nexus.config.tenants[request.tenant]

# The routed model is known and in the tenant's plan, so no rule below
# refuses: the gateway decision skips them on this one lookup (models_test
# proves that entitled leaves deny empty).
entitled if model.plans[tenant.plan]

# METADATA
# title: Model missing
# description: A chat completion names its model (or a rollout alias) in x-nexus-model.
# custom:
#   id: nexus.models.model_missing
#   status: 400
# labels:
#   controls:
#     - SOC2:PI1.2
#     - ISO27001:A.8.26
#     - ISO42001:A.9.4
deny contains reason.build(rego.metadata.rule(), "the x-nexus-model header is required on chat completions") if {
	request.route == "chat.completions"
	routing.model == ""
}

# METADATA
# title: Unknown model
# description: After rollout routing, the model is not in the compiled model catalog.
# custom:
#   id: nexus.models.model_unknown
#   status: 400
# labels:
#   controls:
#     - SOC2:PI1.2
#     - ISO27001:A.8.26
#     - ISO42001:A.6.2.5
#     - ISO42001:A.9.4
deny contains reason.build(rego.metadata.rule(), msg) if {
	request.route == "chat.completions"
	routing.model != ""
	not model
	msg := sprintf("model %q is not known", [routing.model])
}

# METADATA
# title: Model not in plan
# description: The tenant's plan does not include the model the request was routed to.
# custom:
#   id: nexus.models.model_not_entitled
#   status: 403
# labels:
#   controls:
#     - SOC2:CC6.3
#     - ISO27001:A.5.15
#     - ISO42001:A.9.4
deny contains reason.build(rego.metadata.rule(), msg) if {
	request.route == "chat.completions"
	model
	plan := object.get(tenant, "plan", "")
	not model.plans[plan]
	msg := sprintf("plan %q of tenant %q does not include model %q", [plan, request.tenant, routing.model])
}
