package nexus.routing_test

import data.nexus.envoy.authz
import data.nexus.routing
import data.nexus.test_fixtures as fx

# gpt-4o falls back to gpt-4.1 (enterprise only), then gpt-4.1-mini (team
# and enterprise), then an unpriced model; tenants have monthly caps, and
# globex allows unpriced models.
config := json.patch(fx.config, [
	{"op": "add", "path": "/models/gpt-4o/fallbacks", "value": ["gpt-4.1", "gpt-4.1-mini", "house-llm"]},
	{"op": "add", "path": "/models/house-llm", "value": {
		"provider": "self-hosted",
		"plans": {"team": true, "enterprise": true},
	}},
	{"op": "add", "path": "/tenants/acme/budget/monthly_cap_usd", "value": 1000},
	{"op": "add", "path": "/tenants/globex/budget/monthly_cap_usd", "value": 1000},
	{"op": "add", "path": "/tenants/globex/budget/allow_unpriced_models", "value": true},
])

degraded(reason) := {"status": "degraded", "reason": reason, "since": "2026-11-20T10:00:00Z"}

down(reason) := {"status": "down", "reason": reason, "since": "2026-11-20T10:00:00Z"}

state_with(health) := {"period": "2026-11", "spend": {}, "disabled": {}, "health": health}

chat(tenant, api_key, body) := fx.with_body(
	fx.http_request(
		"POST", "/v1/chat/completions",
		object.union(fx.api_key_headers(tenant, api_key), {"x-nexus-model": "gpt-4o"}),
	),
	body,
)

acme_chat := chat("acme", fx.acme_api_key, {"max_tokens": 1000})

globex_chat := chat("globex", fx.globex_api_key, {"max_tokens": 1000})

routed(req, state) := m if {
	m := routing.model with input as req
		with data.nexus.config as config
		with data.nexus_state as state
		with opa.runtime as fx.runtime_eu
}

taken(req, state) := f if {
	f := routing.fallback with input as req
		with data.nexus.config as config
		with data.nexus_state as state
		with opa.runtime as fx.runtime_eu
}

decide(req, state) := d if {
	d := authz.decision with input as req
		with data.nexus.config as config
		with data.nexus_state as state
		with time.now_ns as fx.now_ns
		with opa.runtime as fx.runtime_eu
}

gpt4o_degraded_here := state_with({"models": {"gpt-4o": {"eu-west-1": degraded("p95 9 s")}}, "providers": {}})

test_a_healthy_model_is_routed_as_the_rollout_chose if {
	routed(acme_chat, fx.empty_state) == "gpt-4o"
	not taken(acme_chat, fx.empty_state)
}

test_a_degraded_model_falls_back_to_the_first_qualifying_fallback if {
	routed(acme_chat, gpt4o_degraded_here) == "gpt-4.1"
	f := taken(acme_chat, gpt4o_degraded_here)
	f.from == "gpt-4o"
	f.to == "gpt-4.1"
	f.status == "degraded"
	f.rule == "nexus.models.fallback"
	f.message == `model "gpt-4o" degraded (p95 9 s) in region "eu-west-1" → "gpt-4.1"`
}

test_a_fallback_outside_the_tenants_plan_is_skipped if {
	# globex is on the team plan: gpt-4.1 is enterprise only.
	routed(globex_chat, gpt4o_degraded_here) == "gpt-4.1-mini"
}

test_a_report_for_another_region_changes_nothing_here if {
	state := state_with({"models": {"gpt-4o": {"us-east-1": down("5xx")}}, "providers": {}})
	routed(acme_chat, state) == "gpt-4o"
}

test_a_report_for_every_region_applies_here if {
	state := state_with({"models": {"gpt-4o": {"*": down("5xx")}}, "providers": {}})
	routed(acme_chat, state) == "gpt-4.1"
	taken(acme_chat, state).status == "down"
}

test_this_regions_report_wins_over_every_regions if {
	state := state_with({
		"models": {"gpt-4o": {
			"eu-west-1": degraded("slow here"),
			"*": down("down elsewhere"),
		}},
		"providers": {},
	})
	taken(acme_chat, state).message == `model "gpt-4o" degraded (slow here) in region "eu-west-1" → "gpt-4.1"`
}

test_an_unhealthy_fallback_is_skipped if {
	state := state_with({
		"models": {
			"gpt-4o": {"eu-west-1": degraded("p95 9 s")},
			"gpt-4.1": {"*": down("5xx")},
		},
		"providers": {},
	})
	routed(acme_chat, state) == "gpt-4.1-mini"
}

test_a_provider_down_takes_every_model_of_it_out if {
	state := state_with({"models": {}, "providers": {"openai": {"eu-west-1": down("outage")}}})
	routed(globex_chat, state) == "house-llm"
}

test_a_provider_down_everywhere_is_found_too if {
	state := state_with({"models": {}, "providers": {"openai": {"*": down("outage")}}})
	taken(globex_chat, state).message == `model "gpt-4o" down (outage) in region "eu-west-1" → "house-llm"`
}

test_a_fallback_whose_worst_case_exceeds_what_is_left_is_skipped if {
	# 5000 micro-USD left: gpt-4.1's worst case is 1000 × $8/Mtok = 8000, mini's 1600.
	state := object.union(gpt4o_degraded_here, {"spend": {"acme": {
		"ratio": 0.99, "models": {}, "features": {},
		"remaining": {"total": 5000, "models": {}, "features": {}},
	}}})
	routed(acme_chat, state) == "gpt-4.1-mini"
}

test_a_fallback_over_its_own_model_cap_is_skipped if {
	capped := json.patch(config, [{"op": "add", "path": "/tenants/acme/budget/per_model", "value": {"gpt-4.1": 10}}])
	state := object.union(gpt4o_degraded_here, {"spend": {"acme": {
		"ratio": 0.1, "models": {"gpt-4.1": 0.9995}, "features": {},
		"remaining": {"total": 900000000, "models": {"gpt-4.1": 5000}, "features": {}},
	}}})
	m := routing.model with input as acme_chat
		with data.nexus.config as capped
		with data.nexus_state as state
		with opa.runtime as fx.runtime_eu
	m == "gpt-4.1-mini"

	# With enough left under its cap, gpt-4.1 is taken.
	roomy := json.patch(state, [{"op": "replace", "path": "/spend/acme/remaining/models/gpt-4.1", "value": 9000}])
	taken_model := routing.model with input as acme_chat
		with data.nexus.config as capped
		with data.nexus_state as roomy
		with opa.runtime as fx.runtime_eu
	taken_model == "gpt-4.1"
}

test_an_unpriced_fallback_needs_the_tenants_consent if {
	state := state_with({"models": {}, "providers": {"openai": {"*": down("outage")}}})

	# Without allow_unpriced_models no fallback qualifies: the request is refused.
	no_consent := json.patch(config, [{"op": "remove", "path": "/models/house-llm/plans/enterprise"}])
	not routing.chosen with input as acme_chat
		with data.nexus.config as no_consent
		with data.nexus_state as state
		with opa.runtime as fx.runtime_eu
	consent := json.patch(no_consent, [
		{"op": "add", "path": "/models/house-llm/plans/enterprise", "value": true},
		{"op": "add", "path": "/tenants/acme/budget/allow_unpriced_models", "value": true},
	])
	m := routing.model with input as acme_chat
		with data.nexus.config as consent
		with data.nexus_state as state
		with opa.runtime as fx.runtime_eu
	m == "house-llm"
	not routing.chosen with input as acme_chat
		with data.nexus.config as json.patch(consent, [{
			"op": "remove",
			"path": "/tenants/acme/budget/allow_unpriced_models",
		}])
		with data.nexus_state as state
		with opa.runtime as fx.runtime_eu
}

test_without_a_qualifying_fallback_the_request_is_503_with_retry_after if {
	state := state_with({"models": {}, "providers": {
		"openai": {"*": down("outage")},
		"self-hosted": {"eu-west-1": degraded("queue full")},
	}})
	d := decide(acme_chat, state)
	d.allowed == false
	d.http_status == 503
	d.headers["retry-after"] == "30"
	some r in d.reasons
	r.rule == "nexus.routing.no_fallback"
	r.message == concat("", [
		`model "gpt-4o" is down (outage) and no fallback (gpt-4.1, gpt-4.1-mini, house-llm) `,
		`is healthy, in plan "enterprise" and within budget; retry after 30 s`,
	])
	"SOC2:A1.2" in r.controls
}

test_a_model_without_fallbacks_is_refused_while_unhealthy if {
	state := state_with({"models": {"gpt-4.1": {"eu-west-1": down("5xx")}}, "providers": {}})
	req := fx.with_body(
		fx.http_request(
			"POST", "/v1/chat/completions",
			object.union(fx.acme_headers, {"x-nexus-model": "gpt-4.1"}),
		),
		{"max_tokens": 10},
	)
	d := decide(req, state)
	d.http_status == 503
}

test_the_decision_routes_to_the_fallback_and_names_why if {
	d := decide(acme_chat, gpt4o_degraded_here)
	d.allowed == true
	d.headers["x-nexus-route-model"] == "gpt-4.1"
	d.response_headers_to_add["x-nexus-fallback"] == "gpt-4o->gpt-4.1"
	d.fallback.to == "gpt-4.1"
	[ok, _] := json.match_schema(d, data.decision_result)
	ok
}

test_an_enforcer_without_a_region_label_still_honours_every_region_reports if {
	state := state_with({"models": {"gpt-4o": {"*": degraded("slow")}}, "providers": {}})
	f := routing.fallback with input as acme_chat
		with data.nexus.config as config
		with data.nexus_state as state
		with opa.runtime as {"config": {}}
	f.message == `model "gpt-4o" degraded (slow) in region "*" → "gpt-4.1"`
}

test_other_routes_are_not_routed if {
	req := fx.http_request("GET", "/v1/chats/c-1", fx.acme_headers)
	not routing.primary_problem with input as req
		with data.nexus.config as config
		with data.nexus_state as gpt4o_degraded_here
		with opa.runtime as fx.runtime_eu
}

test_without_max_tokens_the_fallbacks_own_output_bound_prices_it if {
	# No max_tokens: gpt-4.1 is priced at its 32768-token bound (262144 micro-USD),
	# more than the 200000 left; gpt-4.1-mini's (52429) fits.
	state := object.union(gpt4o_degraded_here, {"spend": {"acme": {
		"ratio": 0.99, "models": {}, "features": {},
		"remaining": {"total": 200000, "models": {}, "features": {}},
	}}})
	routed(chat("acme", fx.acme_api_key, {}), state) == "gpt-4.1-mini"
}
