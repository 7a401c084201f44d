package nexus.cost_test

import data.nexus.bound
import data.nexus.cost
import data.nexus.envoy.authz
import data.nexus.test_fixtures as fx

# acme with caps: $100 a month, $10 on gpt-4.1, $5 for the batch feature,
# $50 for chat; gpt-4.1-mini loses its max_output_tokens, and an unpriced
# model joins the catalog.
config := json.patch(fx.config, [
	{"op": "add", "path": "/tenants/acme/budget/monthly_cap_usd", "value": 100},
	{"op": "add", "path": "/tenants/acme/budget/per_model", "value": {"gpt-4.1": 10}},
	{"op": "add", "path": "/tenants/acme/budget/per_feature", "value": {"batch": 5, "chat": 50}},
	{"op": "remove", "path": "/models/gpt-4.1-mini/max_output_tokens"},
	{"op": "add", "path": "/models/llama-local", "value": {"provider": "self-hosted", "plans": {"enterprise": true}}},
])

# What acme has left, exactly, in micro-USD.
state_left(total, models, features) := {
	"period": "2026-11",
	"spend": {"acme": {
		"ratio": 0.5, "models": {}, "features": {},
		"remaining": {"total": total, "models": models, "features": features},
	}},
	"disabled": {},
}

roomy := state_left(50000000, {"gpt-4.1": 9000000}, {"batch": 4000000, "chat": 40000000})

# A chat whose body is sent as text (the bytes bound the prompt) and parsed.
chat_body(api_key, model, body) := object.union(
	fx.http_request("POST", "/v1/chat/completions", object.union(
		fx.api_key_headers("acme", api_key),
		{"x-nexus-model": model},
	)),
	{"parsed_body": body, "attributes": {"request": {"http": {"body": json.marshal(body)}}}},
)

chat(model, body) := chat_body(fx.acme_api_key, model, body)

# 30 bytes of JSON: {"max_tokens":100,"x":"abcde"}
small := {"max_tokens": 100, "x": "abcde"}

refused(req, state) := {r.rule | some r in rs} if {
	rs := cost.deny with input as req with data.nexus.config as config with data.nexus_state as state
}

messages(req, state) := {r.message | some r in rs} if {
	rs := cost.deny with input as req with data.nexus.config as config with data.nexus_state as state
}

worst(req) := w if {
	w := cost.worst_case_micro_usd with input as req with data.nexus.config as config
}

decide(req, state) := d if {
	d := authz.decision with input as req
		with data.nexus.config as config
		with data.nexus_state as state
		with time.now_ns as fx.now_ns
		with opa.runtime as fx.runtime_eu
}

# --- The worst case -----------------------------------------------------------

test_worst_case_is_body_bytes_times_input_price_plus_max_tokens_times_output_price if {
	count(json.marshal(small)) == 30
	worst(chat("gpt-4o", small)) == (30 * 2.5) + (100 * 10)
}

test_a_multibyte_prompt_counts_its_bytes_not_its_characters if {
	# 10 characters, 12 bytes (é is two): {"x":"éé"}
	body := {"x": "éé"}
	count(json.marshal(body)) == 10
	bound.body_bytes == 12 with input as chat("gpt-4o", body)
}

test_envoys_stated_size_is_the_input_bound if {
	# 33 bytes as Envoy states it: the body's own count (30) is not consulted
	req := object.union(chat("gpt-4o", small), {"attributes": {"request": {"http": {"size": "33"}}}})
	bound.body_bytes == 33 with input as req
	masked := json.remove(req, ["attributes/request/http/body", "parsed_body/x"])
	cost.worst_case_micro_usd == ceil((33 * 2.5) + (100 * 10)) with input as masked with data.nexus.config as config
}

test_an_unknown_size_counts_the_body_itself if {
	req := object.union(chat("gpt-4o", small), {"attributes": {"request": {"http": {"size": "-1"}}}})
	bound.body_bytes == 30 with input as req
}

test_content_length_bounds_a_body_forwarded_in_part if {
	length := {"attributes": {"request": {"http": {"headers": {"content-length": "900000"}}}}}
	req := object.union(chat("gpt-4o", small), length)
	bound.body_bytes == 900000 with input as req
}

test_a_bytes_body_is_counted_from_its_base64 if {
	raw := {"attributes": {"request": {"http": {"rawBody": base64.encode(json.marshal(small))}}}}
	req := json.remove(object.union(chat("gpt-4o", small), raw), ["attributes/request/http/body"])
	bound.body_bytes == 30 with input as req
}

test_without_max_tokens_the_models_max_output_bounds_the_output if {
	# {"x":"abcd"}: 12 bytes
	worst(chat("gpt-4o", {"x": "abcd"})) == (12 * 2.5) + (16384 * 10)
	refused(chat("gpt-4o", {"x": "abcd"}), roomy) == set()
}

test_a_bodyless_chat_costs_the_models_max_output if {
	req := fx.http_request("POST", "/v1/chat/completions", object.union(fx.acme_headers, {"x-nexus-model": "gpt-4o"}))
	worst(req) == 16384 * 10
}

test_the_larger_of_max_tokens_and_max_completion_tokens_bounds_the_output if {
	# 46 bytes, counted as 48 (base64 rounds up to a multiple of 3)
	body := {"max_tokens": 10, "max_completion_tokens": 1000}
	worst(chat("gpt-4o", body)) == (48 * 2.5) + (1000 * 10)
}

test_a_priced_model_without_max_output_needs_max_tokens if {
	refused(chat("gpt-4.1-mini", {"x": "abcde"}), roomy) == {"nexus.cost.max_tokens_missing"}
	refused(chat("gpt-4.1-mini", small), roomy) == set()
}

test_max_tokens_must_be_a_positive_integer if {
	every bad in [0, -5, 1.5, "100", null, [100]] {
		refused(chat("gpt-4o", {"max_tokens": bad}), roomy) == {"nexus.cost.max_tokens_invalid"}
	}
}

# --- Unpriced models ----------------------------------------------------------

test_an_unpriced_model_is_refused if {
	refused(chat("llama-local", small), roomy) == {"nexus.cost.model_unpriced"}
	d := decide(chat("llama-local", small), roomy)
	d.http_status == 403
}

test_a_tenant_may_allow_unpriced_models_explicitly if {
	allowing := json.patch(config, [{"op": "add", "path": "/tenants/acme/budget/allow_unpriced_models", "value": true}])
	rs := cost.deny with input as chat("llama-local", {"x": "no max_tokens"})
		with data.nexus.config as allowing
		with data.nexus_state as roomy
	count(rs) == 0
}

test_only_true_allows_unpriced_models if {
	loose := json.patch(config, [{"op": "add", "path": "/tenants/acme/budget/allow_unpriced_models", "value": "yes"}])
	rs := cost.deny with input as chat("llama-local", small) with data.nexus.config as loose with data.nexus_state as roomy
	{r.rule | some r in rs} == {"nexus.cost.model_unpriced"}
}

test_routes_other_than_chat_have_no_worst_case if {
	req := fx.http_request("POST", "/v1/tools/web-search:invoke", fx.acme_headers)
	not cost.worst_case_micro_usd with input as req with data.nexus.config as config
	refused(req, roomy) == set()
}

# --- The per-request cap --------------------------------------------------------

test_a_request_over_the_per_request_cap_is_refused if {
	capped := json.patch(config, [{"op": "add", "path": "/tenants/acme/budget/max_request_usd", "value": 0.01}])
	over := chat("gpt-4o", {"max_tokens": 1000})
	under := chat("gpt-4o", {"max_tokens": 900})
	rs := cost.deny with input as over with data.nexus.config as capped with data.nexus_state as roomy
	[r.rule | some r in rs] == ["nexus.cost.request_cap_exceeded"]
	count(cost.deny) == 0 with input as under with data.nexus.config as capped with data.nexus_state as roomy
}

# --- Against what is left -------------------------------------------------------

test_a_worst_case_over_the_tenants_remaining_budget_is_refused if {
	# $0.001075 at worst, $0.001 left
	refused(chat("gpt-4o", small), state_left(1000, {}, {})) == {"nexus.cost.worst_case_exceeds_remaining"}
	messages(chat("gpt-4o", small), state_left(1000, {}, {})) == {
		`the worst-case cost of this request ($0.001075) exceeds what the budget of tenant "acme" has left ($0.001000)`,
	}
	refused(chat("gpt-4o", small), state_left(1075, {}, {})) == set()
}

test_the_strictest_applicable_cap_refuses_and_each_is_named if {
	state := state_left(50000000, {"gpt-4.1": 500}, {"batch": 700, "chat": 40000000})
	req := chat_body(fx.acme_batch_api_key, "gpt-4.1", small)
	d := decide(req, state)
	scopes := {scope |
		some m in messages(req, state)
		some scope in [`tenant "acme"`, `model "gpt-4.1"`, `feature "batch"`]
		contains(m, scope)
	}
	scopes == {`model "gpt-4.1"`, `feature "batch"`}
	d.http_status == 429
	{r.rule | some r in d.reasons} == {"nexus.cost.worst_case_exceeds_remaining"}
}

test_a_scope_that_does_not_apply_does_not_refuse if {
	# gpt-4.1's and batch's budgets are nearly spent; a chat-key request on gpt-4o is not theirs
	state := state_left(50000000, {"gpt-4.1": 1}, {"batch": 1, "chat": 40000000})
	refused(chat_body(fx.acme_chat_api_key, "gpt-4o", small), state) == set()
}

test_a_spent_scope_is_left_to_its_cap_reached_rule if {
	state := json.patch(state_left(-5, {}, {}), [{"op": "replace", "path": "/spend/acme/ratio", "value": 1.0}])
	refused(chat("gpt-4o", small), state) == set()
	d := decide(chat("gpt-4o", small), state)
	{r.rule | some r in d.reasons} == {"nexus.budget.tenant_cap_reached"}
}

test_without_spend_the_whole_cap_is_left if {
	cost.remaining == {`tenant "acme"`: 100000000} with input as chat("gpt-4o", small)
		with data.nexus.config as config
		with data.nexus_state as fx.empty_state
	refused(chat("gpt-4o", {"max_tokens": 10000001}), fx.empty_state) == {"nexus.cost.worst_case_exceeds_remaining"}
}

test_a_state_without_remaining_figures_falls_back_to_the_ratio if {
	spend := {"acme": {"ratio": 0.75, "models": {"gpt-4.1": 0.5}, "features": {}}}
	old := {"period": "2026-11", "spend": spend, "disabled": {}}
	left := cost.remaining with input as chat("gpt-4.1", small)
		with data.nexus.config as config
		with data.nexus_state as old
	left == {`tenant "acme"`: 25000000, `model "gpt-4.1"`: 5000000}
}

# Two requests that each fit alone but not together: once the first's
# spend is counted and the state republished, the second is refused.
test_the_second_of_two_requests_is_refused_once_the_first_is_counted if {
	req := chat("gpt-4o", {"max_tokens": 60000}) # $0.6 at worst, plus its bytes
	before := state_left(1000000, {}, {})
	decide(req, before).allowed == true
	after := state_left(1000000 - worst(req), {}, {})
	d := decide(req, after)
	d.allowed == false
	d.http_status == 429
}

# --- The reservation the enforcer holds ---------------------------------------

stamped(state) := object.union(state, {"as_of": 1795000000000})

test_an_allowed_priced_chat_names_its_reservation if {
	req := chat_body(fx.acme_batch_api_key, "gpt-4.1", small)
	d := decide(req, stamped(roomy))
	d.allowed == true
	d.reservation == {
		"as_of": 1795000000000,
		"worst_case": worst(req),
		"scopes": {
			`tenant "acme"`: 50000000,
			`tenant "acme" model "gpt-4.1"`: 9000000,
			`tenant "acme" feature "batch"`: 4000000,
		},
	}
}

test_a_reservation_names_only_the_scopes_that_apply if {
	d := decide(chat_body(fx.acme_chat_api_key, "gpt-4o", small), stamped(roomy))
	d.reservation.scopes == {`tenant "acme"`: 50000000, `tenant "acme" feature "chat"`: 40000000}
}

test_a_state_without_as_of_holds_nothing if {
	d := decide(chat("gpt-4o", small), roomy)
	d.allowed == true
	not d.reservation
}

test_a_refused_chat_holds_nothing if {
	d := decide(chat("gpt-4o", {"max_tokens": 100000000}), stamped(roomy))
	d.allowed == false
	not d.reservation
}

test_an_unpriced_model_holds_nothing if {
	allowing := json.patch(config, [{"op": "add", "path": "/tenants/acme/budget/allow_unpriced_models", "value": true}])
	d := authz.decision with input as chat("llama-local", small)
		with data.nexus.config as allowing
		with data.nexus_state as stamped(roomy)
		with time.now_ns as fx.now_ns
		with opa.runtime as fx.runtime_eu
	not d.reservation
}
