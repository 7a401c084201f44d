package nexus.budget_window_test

import data.nexus.envoy.authz
import data.nexus.test_fixtures as fx

chat(tenant, api_key) := fx.with_body(
	fx.http_request(
		"POST", "/v1/chat/completions",
		object.union(fx.api_key_headers(tenant, api_key), {"x-nexus-model": "gpt-4o"}),
	),
	{"max_tokens": 100},
)

# globex has reached its cap in fx.state; hooli is disabled there.
with_resets(resets) := object.union(fx.state, {"resets": resets})

decide(req, state) := d if {
	d := authz.decision with input as req
		with data.nexus.config as fx.config
		with data.nexus_state as state
		with time.now_ns as fx.now_ns
		with opa.runtime as fx.runtime_eu
}

# 2026-11-24T12:00:00Z + 1 h 0.5 s: the refusal rounds the wait up.
an_hour_on := "2026-11-24T13:00:00.5Z"

test_a_reached_cap_says_to_retry_when_its_window_resets if {
	d := decide(chat("globex", fx.globex_api_key), with_resets({"globex": an_hour_on}))
	d.http_status == 429
	d.headers["retry-after"] == "3601"
}

test_a_disabled_tenant_may_retry_when_its_window_resets if {
	d := decide(chat("hooli", fx.hooli_api_key), with_resets({"hooli": an_hour_on}))
	d.http_status == 403
	d.headers["retry-after"] == "3601"
}

test_a_reset_already_past_on_this_clock_asks_for_one_second if {
	d := decide(chat("globex", fx.globex_api_key), with_resets({"globex": "2026-11-24T11:00:00Z"}))
	d.headers["retry-after"] == "1"
}

test_without_a_published_reset_a_cap_refusal_names_no_wait if {
	d := decide(chat("globex", fx.globex_api_key), fx.state)
	d.http_status == 429
	not d.headers["retry-after"]
}

test_a_refusal_the_reset_does_not_lift_names_no_wait if {
	# umbrella is under its cap: its refusal (a model outside its plan) does not end with the window.
	req := fx.with_body(
		fx.http_request(
			"POST", "/v1/chat/completions",
			object.union(fx.api_key_headers("umbrella", fx.umbrella_api_key), {"x-nexus-model": "gpt-4.1"}),
		),
		{"max_tokens": 100},
	)
	d := decide(req, with_resets({"umbrella": an_hour_on}))
	d.allowed == false
	not d.headers["retry-after"]
}

test_an_allowed_request_carries_no_wait if {
	d := decide(chat("acme", fx.acme_api_key), with_resets({"acme": an_hour_on}))
	d.allowed == true
	not d.headers["retry-after"]
	not d.response_headers_to_add["retry-after"]
}
