# The facts the gateway decision skips a concern on (tenants.served,
# rbac.granted, models.entitled, rollout.prompt_servable) must never hide a
# refusal: over every fixture tenant, key, model, prompt and route, a fact
# that holds leaves its concern's deny empty, and the guarded
# concern_reasons equals the union of every concern's deny, unguarded.
package nexus.envoy.guards_test

import data.nexus.budget
import data.nexus.cost
import data.nexus.envoy.authz
import data.nexus.models
import data.nexus.rbac
import data.nexus.residency
import data.nexus.retention
import data.nexus.rollout
import data.nexus.routing
import data.nexus.tenants
import data.nexus.test_fixtures as fx
import data.nexus.tools

credentials := {
	"acme": ["acme", fx.acme_api_key],
	"acme_chat": ["acme", fx.acme_chat_api_key],
	"acme_batch": ["acme", fx.acme_batch_api_key],
	"globex": ["globex", fx.globex_api_key],
	"initech": ["initech", fx.initech_api_key],
	"umbrella": ["umbrella", fx.umbrella_api_key],
	"hooli": ["hooli", fx.hooli_api_key],
	"unknown_tenant": ["nobody", fx.acme_api_key],
}

models_named := {"", "chat-default", "gpt-4.1", "gpt-4.1-mini", "no-such-model"}

prompts_named := {"", "support-agent", "support-agent@1", "support-agent@9", "a@b@c"}

routes := {
	["POST", "/v1/chat/completions"],
	["GET", "/v1/chats/c-1"],
	["DELETE", "/v1/chats/c-1"],
	["DELETE", "/v1/subjects/s-1"],
	["POST", "/v1/tools/web-search:invoke"],
	["POST", "/v1/tools/no-such-tool:invoke"],
}

with_optional(headers, name, value) := headers if value == ""

else := object.union(headers, {name: value})

body := {"max_tokens": 100}

# Chat completions with every model and prompt; the other routes once each.
requests[name] contains fx.with_body(fx.http_request("POST", "/v1/chat/completions", headers), body) if {
	some name, [tenant, key] in credentials
	some model in models_named
	some prompt in prompts_named
	headers := with_optional(
		with_optional(fx.api_key_headers(tenant, key), "x-nexus-model", model),
		"x-nexus-prompt", prompt,
	)
}

requests[name] contains fx.with_body(fx.http_request(method, path, fx.api_key_headers(tenant, key)), body) if {
	some name, [tenant, key] in credentials
	some [method, path] in routes
}

# What concern_reasons was before the guards: every concern, rule by rule.
every_concern_reason contains r if {
	some concern in [
		tenants.deny, rbac.deny, models.deny, budget.deny,
		cost.deny, rollout.deny, residency.deny, routing.deny,
	]
	some r in concern
}

every_concern_reason contains r if {
	tools.routes[data.nexus.request.route]
	some r in tools.deny
}

every_concern_reason contains r if {
	retention.routes[data.nexus.request.route]
	some r in retention.deny
}

fact_names := {"tenants.served", "rbac.granted", "models.entitled", "rollout.prompt_servable"}

fact_holds("tenants.served") if tenants.served

fact_holds("rbac.granted") if rbac.granted

fact_holds("models.entitled") if models.entitled

fact_holds("rollout.prompt_servable") if rollout.prompt_servable

refuses("tenants.served") if count(tenants.deny) > 0

refuses("rbac.granted") if count(rbac.deny) > 0

refuses("models.entitled") if count(models.deny) > 0

refuses("rollout.prompt_servable") if count(rollout.deny) > 0

facts_holding(req) := names if {
	names := {name | some name in fact_names; fact_holds(name)} with input as req
		with data.nexus.config as fx.config
		with data.nexus_state as fx.state
		with time.now_ns as fx.now_ns
		with opa.runtime as fx.runtime_eu
}

# One fact that holds while its concern refuses would let a refusal through.
hidden_refusals(req) := names if {
	names := {name | some name in fact_names; fact_holds(name); refuses(name)} with input as req
		with data.nexus.config as fx.config
		with data.nexus_state as fx.state
		with time.now_ns as fx.now_ns
		with opa.runtime as fx.runtime_eu
}

no_fact_hides_a_refusal(name) if {
	every req in requests[name] {
		hidden_refusals(req) == set()
	}
}

guarded_equals_unguarded(name) if {
	every req in requests[name] {
		guarded := authz.concern_reasons with input as req
			with data.nexus.config as fx.config
			with data.nexus_state as fx.state
			with time.now_ns as fx.now_ns
			with opa.runtime as fx.runtime_eu
		unguarded := every_concern_reason with input as req
			with data.nexus.config as fx.config
			with data.nexus_state as fx.state
			with time.now_ns as fx.now_ns
			with opa.runtime as fx.runtime_eu
		guarded == unguarded
	}
}

# One test per credential keeps each under opa test's timeout.
test_no_fact_hides_a_refusal_acme if no_fact_hides_a_refusal("acme")

test_no_fact_hides_a_refusal_acme_chat if no_fact_hides_a_refusal("acme_chat")

test_no_fact_hides_a_refusal_acme_batch if no_fact_hides_a_refusal("acme_batch")

test_no_fact_hides_a_refusal_globex if no_fact_hides_a_refusal("globex")

test_no_fact_hides_a_refusal_initech if no_fact_hides_a_refusal("initech")

test_no_fact_hides_a_refusal_umbrella if no_fact_hides_a_refusal("umbrella")

test_no_fact_hides_a_refusal_hooli if no_fact_hides_a_refusal("hooli")

test_no_fact_hides_a_refusal_unknown_tenant if no_fact_hides_a_refusal("unknown_tenant")

test_guarded_equals_unguarded_acme if guarded_equals_unguarded("acme")

test_guarded_equals_unguarded_acme_chat if guarded_equals_unguarded("acme_chat")

test_guarded_equals_unguarded_acme_batch if guarded_equals_unguarded("acme_batch")

test_guarded_equals_unguarded_globex if guarded_equals_unguarded("globex")

test_guarded_equals_unguarded_initech if guarded_equals_unguarded("initech")

test_guarded_equals_unguarded_umbrella if guarded_equals_unguarded("umbrella")

test_guarded_equals_unguarded_hooli if guarded_equals_unguarded("hooli")

test_guarded_equals_unguarded_unknown_tenant if guarded_equals_unguarded("unknown_tenant")

test_the_table_covers_every_credential if {
	count(requests) == count(credentials)
	count({req | some reqs in requests; some req in reqs}) > 200
}

# Each fact is exercised both ways, so neither test passes vacuously.
test_every_fact_holds_and_fails_somewhere if {
	holding := [facts_holding(req) | some reqs in requests; some req in reqs]
	every name in fact_names {
		some held in holding
		name in held
		some other in holding
		not name in other
	}
}
