package nexus.models_test

import data.nexus.models
import data.nexus.test_fixtures as fx

reasons_for(tenant, method, path, headers) := {[r.rule, r.status, r.message] | some r in rs} if {
	req := fx.http_request(method, path, object.union(fx.api_key_headers(tenant, "unused"), headers))
	rs := models.deny with input as req with data.nexus.config as fx.config
}

chat_reasons(tenant, headers) := reasons_for(tenant, "POST", "/v1/chat/completions", headers)

test_model_in_plan_is_allowed if {
	chat_reasons("acme", {"x-nexus-model": "gpt-4.1"}) == set()
	chat_reasons("globex", {"x-nexus-model": "gpt-4o"}) == set()
}

test_routed_alias_in_plan_is_allowed if {
	chat_reasons("acme", {"x-nexus-model": "chat-default"}) == set()
}

test_missing_model_is_400 if {
	chat_reasons("acme", {}) == {[
		"nexus.models.model_missing", 400,
		"the x-nexus-model header is required on chat completions",
	]}
}

test_other_routes_need_no_model if {
	reasons_for("acme", "GET", "/v1/chats/c-1", {}) == set()
	reasons_for("acme", "POST", "/v1/tools/web-search:invoke", {}) == set()
}

test_unknown_model_is_400 if {
	req := fx.http_request("POST", "/v1/chat/completions", object.union(fx.acme_headers, {"x-nexus-model": "gpt-9"}))
	rs := models.deny with input as req
		with data.nexus.config as fx.config
	rs == {{
		"rule": "nexus.models.model_unknown",
		"message": `model "gpt-9" is not known`,
		"controls": ["SOC2:PI1.2", "ISO27001:A.8.26", "ISO42001:A.6.2.5", "ISO42001:A.9.4"],
		"status": 400,
	}}
}

test_model_outside_the_plan_is_403 if {
	chat_reasons("globex", {"x-nexus-model": "gpt-4.1"}) == {[
		"nexus.models.model_not_entitled", 403,
		`plan "team" of tenant "globex" does not include model "gpt-4.1"`,
	]}
}

test_entitlement_is_checked_after_rollout_routing if {
	# with everyone in the canary, globex's variant slot picks gpt-4.1
	req := fx.http_request("POST", "/v1/chat/completions", object.union(
		fx.api_key_headers("globex", "unused"),
		{"x-nexus-model": "chat-default"},
	))
	rs := models.deny with input as req with data.nexus.config as fx.everyone_in_canary
	{[r.rule, r.status, r.message] | some r in rs} == {[
		"nexus.models.model_not_entitled", 403,
		`plan "team" of tenant "globex" does not include model "gpt-4.1"`,
	]}
}

test_unknown_tenant_is_left_to_the_tenants_concern if {
	chat_reasons("nobody", {"x-nexus-model": "gpt-4o"}) == set()
}
