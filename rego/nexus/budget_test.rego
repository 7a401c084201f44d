package nexus.budget_test

import data.nexus.budget
import data.nexus.test_fixtures as fx

request_for(tenant, method, path, headers) := fx.http_request(
	method, path,
	object.union(fx.api_key_headers(tenant, "unused"), headers),
)

chat_for(tenant, headers) := request_for(tenant, "POST", "/v1/chat/completions", headers)

outcome(req) := {"reasons": {[r.rule, r.status, r.message] | some r in rs}, "warning": warning} if {
	rs := budget.deny with input as req with data.nexus.config as fx.config with data.nexus_state as fx.state
	warning := budget.warning with input as req with data.nexus.config as fx.config with data.nexus_state as fx.state
}

test_spend_below_the_soft_cap_is_quiet if {
	outcome(chat_for("umbrella", {"x-nexus-model": "gpt-4.1"})) == {"reasons": set(), "warning": ""}
}

test_tenant_without_spend_is_quiet if {
	outcome(chat_for("initech", {"x-nexus-model": "gpt-4o"})) == {"reasons": set(), "warning": ""}
}

keyed(api_key, headers) := fx.http_request(
	"POST", "/v1/chat/completions",
	object.union(fx.api_key_headers("acme", api_key), headers),
)

test_missing_state_bundle_refuses_metered_routes if {
	every tenant in ["acme", "globex", "umbrella"] {
		rs := budget.deny with input as chat_for(tenant, {"x-nexus-model": "gpt-4o"}) with data.nexus.config as fx.config
		{[r.rule, r.status] | some r in rs} == {["nexus.budget.state_unknown", 503]}
	}
}

test_missing_state_bundle_refuses_no_read if {
	read := request_for("acme", "GET", "/v1/chats/c-1", {})
	count(budget.deny) == 0 with input as read with data.nexus.config as fx.config
}

test_tenant_may_choose_to_be_served_before_state_loads if {
	config := json.patch(fx.config, [{"op": "add", "path": "/tenants/acme/budget/before_state", "value": "allow"}])
	count(budget.deny) == 0 with input as chat_for("acme", {"x-nexus-model": "gpt-4o"}) with data.nexus.config as config
}

test_feature_header_cannot_dodge_a_feature_cap if {
	# the key is bound to "batch" (120 % of its cap); the header claims "chat"
	o := outcome(keyed(fx.acme_batch_api_key, {"x-nexus-model": "gpt-4o", "x-nexus-feature": "chat"}))
	{r[0] | some r in o.reasons} == {"nexus.budget.feature_cap_reached"}
}

test_feature_comes_from_a_verified_jwt_claim if {
	token := fx.sign(fx.keys.idp_rsa, {
		"iss": fx.acme_issuer, "aud": "nexus-gateway", "sub": "alice", "nexus_tenant": "acme",
		"nexus_feature": "batch", "iat": fx.now_s, "exp": fx.now_s + 300,
	})
	req := fx.http_request("POST", "/v1/chat/completions", {
		"authorization": fx.bearer(token), "x-nexus-tenant": "acme", "x-nexus-model": "gpt-4o",
	})
	rs := budget.deny with input as req with data.nexus.config as fx.config
		with data.nexus_state as fx.state with time.now_ns as fx.now_ns
	{r.rule | some r in rs} == {"nexus.budget.feature_cap_reached"}
}

test_soft_cap_warns if {
	o := outcome(keyed(fx.acme_chat_api_key, {"x-nexus-model": "gpt-4o"}))
	o.reasons == set()
	o.warning == "feature:chat=91%, tenant=85%"
}

test_model_and_feature_below_soft_cap_do_not_warn if {
	outcome(chat_for("acme", {"x-nexus-model": "gpt-4o"})).warning == "tenant=85%"
}

test_model_past_the_soft_cap_warns if {
	state := json.patch(fx.state, [{"op": "replace", "path": "/spend/umbrella/models/gpt-4.1", "value": 0.95}])
	w := budget.warning with input as chat_for("umbrella", {"x-nexus-model": "gpt-4.1"})
		with data.nexus.config as fx.config
		with data.nexus_state as state
	w == "model:gpt-4.1=95%"
}

test_tenant_cap_is_429 if {
	rs := budget.deny with input as chat_for("globex", {"x-nexus-model": "gpt-4o"})
		with data.nexus.config as fx.config
		with data.nexus_state as fx.state
	rs == {{
		"rule": "nexus.budget.tenant_cap_reached",
		"message": `tenant "globex" has used 100% of its budget for this window`,
		"controls": ["SOC2:A1.1", "ISO27001:A.8.6", "ISO42001:A.4.5"],
		"status": 429,
	}}
}

test_tenant_cap_applies_to_tool_calls if {
	outcome(request_for("globex", "POST", "/v1/tools/web-search:invoke", {})).reasons == {[
		"nexus.budget.tenant_cap_reached", 429,
		`tenant "globex" has used 100% of its budget for this window`,
	]}
}

test_tenant_cap_does_not_block_reads_or_erasure if {
	outcome(request_for("globex", "GET", "/v1/chats/c-1", {})).reasons == set()
	outcome(request_for("globex", "DELETE", "/v1/subjects/u-1", {})).reasons == set()
}

test_model_cap_is_429 if {
	outcome(chat_for("acme", {"x-nexus-model": "gpt-4.1"})).reasons == {[
		"nexus.budget.model_cap_reached", 429,
		`tenant "acme" has used 100% of its budget for model "gpt-4.1"`,
	]}
}

test_model_cap_follows_rollout_routing if {
	config := json.patch(fx.config, [{
		"op": "add",
		"path": "/rollouts/models/chat-default/overrides/acme",
		"value": "gpt-4.1",
	}])
	rs := budget.deny with input as chat_for("acme", {"x-nexus-model": "chat-default"})
		with data.nexus.config as config
		with data.nexus_state as fx.state
	{r.rule | some r in rs} == {"nexus.budget.model_cap_reached"}
}

test_feature_cap_is_429 if {
	outcome(keyed(fx.acme_batch_api_key, {"x-nexus-model": "gpt-4o"})).reasons == {[
		"nexus.budget.feature_cap_reached", 429,
		`tenant "acme" has used 120% of its budget for feature "batch"`,
	]}
}

test_disabled_tenant_is_403_on_every_route if {
	every path in [["POST", "/v1/chat/completions"], ["GET", "/v1/chats/c-1"], ["DELETE", "/v1/subjects/u-1"]] {
		outcome(request_for("hooli", path[0], path[1], {})).reasons == {[
			"nexus.budget.tenant_disabled", 403,
			`tenant "hooli" is disabled: monthly hard cap reached`,
		]}
	}
}

test_disabled_entry_without_reason_still_disables if {
	state := json.patch(fx.state, [{"op": "replace", "path": "/disabled/hooli", "value": true}])
	rs := budget.deny with input as chat_for("hooli", {})
		with data.nexus.config as fx.config
		with data.nexus_state as state
	{r.message | some r in rs} == {`tenant "hooli" is disabled: budget exhausted`}
}

# --- onAnomaly: what holds while the tenant's spend anomaly is on hold ---------

anomaly_action := {"lower_soft_cap_to_ratio": 0.05, "hold_models_above_usd_per_mtok": 5}

anomaly_config := json.patch(fx.config, [{
	"op": "add", "path": "/tenants/umbrella/budget/on_anomaly",
	"value": anomaly_action,
}])

held_state := object.union(fx.state, {"anomaly_holds": {"umbrella": {
	"day": "2026-12-02", "kind": "spike", "since": "2026-12-02T10:00:00+00:00",
}}})

held_outcome(req, config, state) := {"rules": {r.rule | some r in rs}, "warning": warning} if {
	rs := budget.deny with input as req with data.nexus.config as config with data.nexus_state as state
	warning := budget.warning with input as req with data.nexus.config as config with data.nexus_state as state
}

test_a_held_anomaly_refuses_models_above_the_price_and_warns_sooner if {
	costly := held_outcome(chat_for("umbrella", {"x-nexus-model": "gpt-4.1"}), anomaly_config, held_state)
	costly.rules == {"nexus.budget.anomaly_hold"}
	cheap := held_outcome(chat_for("umbrella", {"x-nexus-model": "gpt-4.1-mini"}), anomaly_config, held_state)
	cheap == {"rules": set(), "warning": "tenant=10%"}
}

test_a_held_anomaly_names_the_finding_and_the_release if {
	rs := budget.deny with input as chat_for("umbrella", {"x-nexus-model": "gpt-4.1"})
		with data.nexus.config as anomaly_config
		with data.nexus_state as held_state
	some r in rs
	r.status == 403
	contains(r.message, "spike on 2026-12-02")
	contains(r.message, "approver's release")
}

test_an_action_without_a_hold_changes_nothing if {
	held_outcome(chat_for("umbrella", {"x-nexus-model": "gpt-4.1"}), anomaly_config, fx.state) == {
		"rules": set(),
		"warning": "",
	}
}

test_a_hold_without_an_action_changes_nothing if {
	held_outcome(chat_for("umbrella", {"x-nexus-model": "gpt-4.1"}), fx.config, held_state) == {
		"rules": set(),
		"warning": "",
	}
}

test_a_hold_on_another_tenant_changes_nothing if {
	other := object.union(fx.state, {"anomaly_holds": {"acme": {
		"day": "2026-12-02", "kind": "drift", "since": "2026-12-02T10:00:00+00:00",
	}}})
	held_outcome(chat_for("umbrella", {"x-nexus-model": "gpt-4.1"}), anomaly_config, other) == {
		"rules": set(),
		"warning": "",
	}
}

test_a_hold_that_only_lowers_the_soft_cap_refuses_nothing if {
	config := json.patch(fx.config, [{
		"op": "add", "path": "/tenants/umbrella/budget/on_anomaly",
		"value": {"lower_soft_cap_to_ratio": 0.05},
	}])
	held_outcome(chat_for("umbrella", {"x-nexus-model": "gpt-4.1"}), config, held_state) == {
		"rules": set(),
		"warning": "model:gpt-4.1=20%, tenant=10%",
	}
}
