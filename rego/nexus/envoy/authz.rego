# METADATA
# title: Gateway authorization
# description: |
#   The entry point Envoy's ext_authz plugin evaluates for every gateway
#   request. Reasons come in stages so the first failing stage explains a
#   refusal: (1) the request itself, (2) the credential, (3) every other
#   concern together.
# labels:
#   controls:
#     - EUAIACT:Art.12
#     - EUAIACT:Art.19
#     - EUAIACT:Art.26
#     - HIPAA:164.312(b)
#     - PCI:10.2.1
#     - PCI:10.2.2
#     - ISO42001:A.6.2.8
package nexus.envoy.authz

import data.nexus.budget
import data.nexus.capability
import data.nexus.cost
import data.nexus.identity
import data.nexus.models
import data.nexus.ratelimit
import data.nexus.rbac
import data.nexus.request
import data.nexus.residency
import data.nexus.retention
import data.nexus.rollout
import data.nexus.routing
import data.nexus.tenants
import data.nexus.tools

# Most important first, so the status names what the client must fix
# first; a spend cap (429) is the answer only when nothing else is wrong,
# and "spend not known yet" (503) only when nothing else refuses.
status_precedence := [401, 404, 400, 403, 410, 429, 503]

# A concern whose one fact (tenants.served, rbac.granted, models.entitled,
# rollout.prompt_servable) proves that none of its rules can refuse is not
# evaluated rule by rule: an allowed request skips those rules on one lookup
# each. Every reason is still reported when a fact fails, and guards_test
# proves over the fixtures that no fact holds while its concern refuses.
concern_reasons contains r if {
	not tenants.served
	some r in tenants.deny
}

concern_reasons contains r if {
	not rbac.granted
	some r in rbac.deny
}

concern_reasons contains r if {
	not models.entitled
	some r in models.deny
}

concern_reasons contains r if some r in budget.deny

concern_reasons contains r if some r in cost.deny

concern_reasons contains r if {
	tools.routes[request.route]
	some r in tools.deny
}

concern_reasons contains r if {
	retention.routes[request.route]
	some r in retention.deny
}

concern_reasons contains r if {
	not rollout.prompt_servable
	some r in rollout.deny
}

concern_reasons contains r if some r in residency.deny

concern_reasons contains r if some r in routing.deny

# Later stages are evaluated only when earlier ones pass, which also keeps
# JWT verification and schema checks off requests refused in stage 1.
#
# No stage refusing and yet no credential can only be a defect in the
# policy; the default then refuses instead of letting the request through.
default raw_reasons := {{
	"rule": "nexus.envoy.authz.undecided",
	"message": "the policy reached no decision",
	"controls": ["SOC2:CC6.1"],
	"status": 403,
}}

raw_reasons := request.deny if {
	count(request.deny) > 0
} else := identity.deny if {
	count(identity.deny) > 0
} else := concern_reasons if {
	count(concern_reasons) > 0
} else := set() if {
	identity.authenticated
}

# Sorted by rule, then message, so equal requests give equal decisions.
default reasons := []

reasons := [{"rule": rule, "message": message, "controls": controls} |
	some [rule, message, controls] in sort({[r.rule, r.message, r.controls] | some r in raw_reasons})
]

# A status missing from the precedence list still refuses.
default refusal_status := 403

refusal_status := ranked[0] if {
	statuses := {r.status | some r in raw_reasons}
	ranked := [status | some status in status_precedence; statuses[status]]
}

# A credential is required even when no deny rule fired, so a defect that
# silences every deny rule still cannot let an anonymous caller through.
default allowed := false

allowed if {
	count(raw_reasons) == 0
	identity.authenticated
}

upstream_headers["x-nexus-route-model"] := routing.model if request.route == "chat.completions"

upstream_headers["x-nexus-prompt-version"] := rollout.prompt_version if request.headers["x-nexus-prompt"]

# The approval a tool call spent, so the gateway can report its use (POST
# /v1/approvals/used). Always set on tool calls, overwriting whatever the
# client sent under that name.
upstream_headers["x-nexus-approval-id"] := approval_id if request.route == "tools.invoke"

default approval_id := "none"

approval_id := tools.approval_claims.jti if tools.approval_verified

response_headers["x-nexus-budget-warning"] := budget.warning if budget.warning != ""

# Ids only: the probe's reason text stays in the decision (and its log).
response_headers["x-nexus-fallback"] := sprintf("%s->%s", [routing.fallback.from, routing.fallback.to]) if {
	routing.fallback
}

# How long a refused client should wait: the longest of the fallback's
# retry and, when a refusal lifts at the tenant's budget window reset, the
# time until then.
retry_waits contains routing.retry_after_s if count(routing.deny) > 0

retry_waits contains budget.until_reset_s if {
	some r in raw_reasons
	budget.lifted_by_reset[r.rule]
}

default retry_headers := {}

retry_headers := {"retry-after": format_int(max(retry_waits), 10)} if count(retry_waits) > 0

refusal_headers := object.union({"content-type": "application/json"}, retry_headers)

# The credential and the approval token stop here: the upstream gateway
# gets the decision, never the secrets it was made from.
removed_request_headers := ["authorization", "x-nexus-approval"]

# The buckets an allowed request counts against reach Envoy as dynamic
# metadata (namespace envoy.filters.http.ext_authz, key "ratelimit"),
# where its rate limit filters read them; a bundle without rate limits
# adds nothing.
with_rate_limits(d) := object.union(d, {"dynamic_metadata": {"ratelimit": ratelimit.buckets}}) if {
	count(ratelimit.buckets) > 0
} else := d

# A tenant whose signed spec chooses whether its answers wait for the
# decision's fsync on the enforcer states it in each decision, where the
# durable decision log reads it; without a choice, the enforcer's default.
with_log_choice(d) := object.union(d, {"decision_log": choice}) if {
	choice := data.nexus.config.tenants[request.tenant].decision_log
} else := d

# A fallback the policy took is named in the decision, so the decision log
# carries why this request went to another model.
with_fallback(d) := object.union(d, {"fallback": routing.fallback}) if {
	routing.fallback
} else := d

# An allowed priced chat names what the ext_authz plugin holds for it
# (nexus.cost.reservation): its worst case, the scopes it draws on with
# what each had left as published, and when that was read.
with_reservation(d) := object.union(d, {"reservation": cost.reservation}) if {
	cost.reservation
} else := d

# METADATA
# title: Gateway decision
# description: |
#   The object the ext_authz plugin turns into Envoy's CheckResponse. The
#   default is a refusal, so an evaluation that yields nothing still denies.
# entrypoint: true
default decision := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"response_headers_to_add": {},
	"request_headers_to_remove": [],
	# A default holds only constants, so the body is written out rather than
	# built with json.marshal; it is the JSON of "reasons" below.
	# regal ignore:line-length
	"body": `{"error":"denied","reasons":[{"controls":["SOC2:CC6.1"],"message":"the policy reached no decision","rule":"nexus.envoy.authz.undecided"}]}`,
	"reasons": [{
		"rule": "nexus.envoy.authz.undecided",
		"message": "the policy reached no decision",
		"controls": ["SOC2:CC6.1"],
	}],
}

decision := with_log_choice(with_reservation(with_fallback(with_rate_limits({
	"allowed": true,
	"http_status": 200,
	"headers": upstream_headers,
	"response_headers_to_add": response_headers,
	"request_headers_to_remove": removed_request_headers,
	"body": "",
	"reasons": [],
	"labels": capability.labels,
})))) if {
	allowed == true
}

decision := with_log_choice({
	"allowed": false,
	"http_status": refusal_status,
	"headers": refusal_headers,
	"response_headers_to_add": {},
	"request_headers_to_remove": [],
	"body": json.marshal({"error": "denied", "reasons": reasons}),
	"reasons": reasons,
	"labels": capability.labels,
}) if {
	allowed == false
}
