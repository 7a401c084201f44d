# End to end: each concern's allow and deny through the full decision, with
# the compiled config, the state bundle, a fixed clock and an EU enforcer.
package nexus.envoy.authz_e2e_test

import data.nexus.envoy.authz
import data.nexus.test_fixtures as fx

decide(req) := decide_in(req, fx.runtime_eu)

decide_in(req, runtime) := d if {
	d := authz.decision with input as req
		with data.nexus.config as fx.config
		with data.nexus_state as fx.state
		with time.now_ns as fx.now_ns
		with opa.runtime as runtime
}

decide_without_spend(req) := d if {
	d := authz.decision with input as req
		with data.nexus.config as fx.config
		with data.nexus_state as fx.empty_state
		with time.now_ns as fx.now_ns
		with opa.runtime as fx.runtime_eu
}

decide_without_state(req) := d if {
	d := authz.decision with input as req
		with data.nexus.config as fx.config
		with time.now_ns as fx.now_ns
		with opa.runtime as fx.runtime_eu
}

request_for(tenant, api_key, method, path, headers) := fx.http_request(
	method, path,
	object.union(fx.api_key_headers(tenant, api_key), headers),
)

acme(method, path, headers) := request_for("acme", fx.acme_api_key, method, path, headers)

globex(method, path, headers) := request_for("globex", fx.globex_api_key, method, path, headers)

alice(method, path, headers) := fx.http_request(
	method, path,
	object.union({"authorization": fx.bearer(fx.alice_token), "x-nexus-tenant": "acme"}, headers),
)

# Chat c-1 of ``tenant`` created ``days`` ago, as the chat store signs it.
chat_record(tenant, days) := fx.record_headers(tenant, "c-1", "chat-history", days)

rules(d) := [r.rule | some r in d.reasons]

denied(d, status, expected_rules) if {
	d.allowed == false
	d.http_status == status
	d.headers == {"content-type": "application/json"}
	d.request_headers_to_remove == []
	json.unmarshal(d.body) == {"error": "denied", "reasons": d.reasons}
	{r | some r in rules(d)} == expected_rules
}

allowed(d) if {
	d.allowed == true
	d.http_status == 200
	d.request_headers_to_remove == ["authorization", "x-nexus-approval"]
	d.reasons == []
	d.body == ""
}

# Request and credential stages

test_chat_completion_is_allowed_with_routing_headers if {
	d := decide(acme("POST", "/v1/chat/completions", {"x-nexus-model": "chat-default", "x-nexus-prompt": "support-agent"}))
	allowed(d)

	# acme is in the chat-default canary (slot 2be9702a < 33333333)
	d.headers == {"x-nexus-route-model": "gpt-4.1-mini", "x-nexus-prompt-version": "3"}
	d.response_headers_to_add == {"x-nexus-budget-warning": "tenant=85%"}
}

test_chat_completion_without_prompt_or_spend if {
	d := decide_without_spend(alice("POST", "/v1/chat/completions", {"x-nexus-model": "gpt-4.1"}))
	allowed(d)
	d.headers == {"x-nexus-route-model": "gpt-4.1"}
	d.response_headers_to_add == {}
}

test_unknown_route_is_404_before_authentication if {
	d := decide(fx.http_request("GET", "/v1/admin/keys", {"x-nexus-tenant": "acme"}))
	denied(d, 404, {"nexus.request.unknown_route"})
	d.reasons[0].controls == ["SOC2:CC6.1", "ISO27001:A.8.3", "HIPAA:164.312(a)(1)", "PCI:7.3.3"]
}

test_missing_tenant_header_is_400 if {
	d := decide(fx.http_request("POST", "/v1/chat/completions", {"authorization": fx.bearer(fx.acme_api_key)}))
	denied(d, 400, {"nexus.request.tenant_header_missing"})
}

test_missing_credential_is_401 if {
	d := decide(fx.http_request("POST", "/v1/chat/completions", {"x-nexus-tenant": "acme", "x-nexus-model": "gpt-4o"}))
	denied(d, 401, {"nexus.identity.credential_missing"})
	d.reasons[0].controls == [
		"SOC2:CC6.1",
		"ISO27001:A.5.17",
		"ISO27001:A.8.5",
		"HIPAA:164.312(d)",
		"HIPAA:164.308(a)(5)(ii)(C)",
		"PCI:8.3.1",
		"PCI:10.2.1.4",
	]
}

test_invalid_credential_is_401_and_hides_the_rest if {
	d := decide(request_for("nobody", "nx-not-a-key", "POST", "/v1/chat/completions", {}))
	denied(d, 401, {"nexus.identity.credential_invalid"})
}

test_expired_jwt_is_401 if {
	token := fx.sign(fx.keys.idp_rsa, object.union(fx.alice_claims, {"exp": fx.now_s - 60}))
	d := decide(fx.http_request("POST", "/v1/chat/completions", {
		"authorization": fx.bearer(token),
		"x-nexus-tenant": "acme",
		"x-nexus-model": "gpt-4o",
	}))
	denied(d, 401, {"nexus.identity.credential_invalid"})
}

test_credential_of_another_tenant_is_403 if {
	d := decide(request_for("globex", fx.acme_api_key, "POST", "/v1/chat/completions", {"x-nexus-model": "gpt-4o"}))
	denied(d, 403, {"nexus.identity.tenant_mismatch"})
}

# Tenants

# The compiler never lets an issuer speak for an unknown tenant; this
# config does, to prove the tenants check stands on its own.
ghost_config := json.patch(fx.config, [{
	"op": "add",
	"path": concat("/", ["/issuers", replace(fx.acme_issuer, "/", "~1"), "tenants", "ghost"]),
	"value": true,
}])

test_tenant_unknown_to_the_config_is_403 if {
	token := fx.sign(fx.keys.idp_rsa, object.union(fx.alice_claims, {"nexus_tenant": "ghost"}))
	request := fx.http_request("POST", "/v1/chat/completions", {
		"authorization": fx.bearer(token),
		"x-nexus-tenant": "ghost",
		"x-nexus-model": "gpt-4o",
	})
	d := authz.decision with input as request
		with data.nexus.config as ghost_config
		with data.nexus_state as fx.state
		with time.now_ns as fx.now_ns
		with opa.runtime as fx.runtime_eu
	denied(d, 403, {"nexus.tenants.unknown_tenant", "nexus.rbac.permission_denied"})
}

test_suspended_tenant_is_403 if {
	d := decide(request_for("initech", fx.initech_api_key, "POST", "/v1/chat/completions", {"x-nexus-model": "gpt-4o"}))
	denied(d, 403, {"nexus.tenants.tenant_suspended"})
	d.reasons[0].controls == ["SOC2:CC6.1", "SOC2:CC6.2", "ISO27001:A.5.18", "HIPAA:164.308(a)(4)(ii)(C)", "PCI:7.3.1"]
}

# RBAC

test_missing_permission_is_403 if {
	d := decide(acme("DELETE", "/v1/subjects/u-42", {}))
	denied(d, 403, {"nexus.rbac.permission_denied"})
	d.reasons[0].message == `apikey:acme-prod-1 lacks permission "subjects:erase" in tenant "acme"`
}

test_erasure_by_a_dpo_is_allowed if {
	d := decide(alice("DELETE", "/v1/subjects/u-42", {}))
	allowed(d)
	d.headers == {}
}

# Models and rollout

test_model_outside_the_plan_is_403 if {
	d := decide_without_spend(globex("POST", "/v1/chat/completions", {"x-nexus-model": "gpt-4.1"}))
	denied(d, 403, {"nexus.models.model_not_entitled"})
	d.reasons[0].controls == ["SOC2:CC6.3", "ISO27001:A.5.15", "ISO42001:A.9.4"]
}

test_canary_routes_to_a_model_the_plan_lacks if {
	# in the canary, globex's variant slot 605d5bce picks gpt-4.1, an enterprise model
	d := authz.decision with input as globex("POST", "/v1/chat/completions", {"x-nexus-model": "chat-default"})
		with data.nexus.config as fx.everyone_in_canary
		with data.nexus_state as fx.empty_state
		with time.now_ns as fx.now_ns
		with opa.runtime as fx.runtime_eu
	denied(d, 403, {"nexus.models.model_not_entitled"})
}

test_override_routes_the_tenant if {
	req := request_for("umbrella", fx.umbrella_api_key, "POST", "/v1/chat/completions", {"x-nexus-model": "chat-default"})
	d := decide_in(req, fx.runtime_us)
	allowed(d)
	d.headers == {"x-nexus-route-model": "gpt-4.1"}
}

test_unknown_model_is_400 if {
	d := decide(acme("POST", "/v1/chat/completions", {"x-nexus-model": "gpt-9"}))
	denied(d, 400, {"nexus.models.model_unknown"})
}

test_missing_model_is_400 if {
	denied(decide(acme("POST", "/v1/chat/completions", {})), 400, {"nexus.models.model_missing"})
}

test_pinned_prompt_version_goes_upstream if {
	d := decide(acme("POST", "/v1/chat/completions", {"x-nexus-model": "gpt-4o", "x-nexus-prompt": "support-agent@4"}))
	allowed(d)
	d.headers["x-nexus-prompt-version"] == "4"
}

test_retired_prompt_version_is_400 if {
	d := decide(acme("POST", "/v1/chat/completions", {"x-nexus-model": "gpt-4o", "x-nexus-prompt": "support-agent@1"}))
	denied(d, 400, {"nexus.rollout.prompt_version_retired"})
	d.reasons[0].controls == ["SOC2:CC8.1", "ISO27001:A.8.32", "PCI:6.5.1", "ISO42001:A.6.2.5"]
}

# Budgets

test_tenant_over_its_cap_is_429 if {
	d := decide(globex("POST", "/v1/chat/completions", {"x-nexus-model": "gpt-4o"}))
	denied(d, 429, {"nexus.budget.tenant_cap_reached"})
	d.response_headers_to_add == {}
	d.reasons[0].controls == ["SOC2:A1.1", "ISO27001:A.8.6", "ISO42001:A.4.5"]
}

test_metered_route_is_503_before_state_loads if {
	d := decide_without_state(globex("POST", "/v1/chat/completions", {"x-nexus-model": "gpt-4o"}))
	denied(d, 503, {"nexus.budget.state_unknown"})
}

test_unmetered_route_is_served_before_state_loads if {
	allowed(decide_without_state(acme("GET", "/v1/chats/c-1", chat_record("acme", 3))))
}

test_model_over_its_cap_is_429 if {
	d := decide(acme("POST", "/v1/chat/completions", {"x-nexus-model": "gpt-4.1"}))
	denied(d, 429, {"nexus.budget.model_cap_reached"})
}

test_feature_soft_cap_adds_to_the_warning if {
	d := decide(request_for("acme", fx.acme_chat_api_key, "POST", "/v1/chat/completions", {"x-nexus-model": "gpt-4o"}))
	allowed(d)
	d.response_headers_to_add == {"x-nexus-budget-warning": "feature:chat=91%, tenant=85%"}
}

test_disabled_tenant_is_403_even_on_reads if {
	d := decide(request_for("hooli", fx.hooli_api_key, "GET", "/v1/chats/c-1", chat_record("hooli", 1)))
	denied(d, 403, {"nexus.budget.tenant_disabled"})
}

test_refusal_outranks_the_cap if {
	# globex is over its cap (429) and not entitled to gpt-4.1 (403)
	d := decide(globex("POST", "/v1/chat/completions", {"x-nexus-model": "gpt-4.1"}))
	denied(d, 403, {"nexus.models.model_not_entitled", "nexus.budget.tenant_cap_reached"})
	rules(d) == ["nexus.budget.tenant_cap_reached", "nexus.models.model_not_entitled"]
}

# Tools

tool_call(tool, headers, arguments) := fx.with_body(
	acme("POST", concat("", ["/v1/tools/", tool, ":invoke"]), headers),
	{"arguments": arguments},
)

test_low_risk_tool_call_is_allowed if {
	d := decide_without_spend(tool_call("web-search", {"x-nexus-tool": "web-search"}, {"query": "opa"}))
	allowed(d)
	d.headers == {"x-nexus-approval-id": "none"}
}

test_client_cannot_name_the_approval_the_gateway_reports if {
	d := decide(tool_call("web-search", {"x-nexus-approval-id": "someone-elses-jti"}, {"query": "opa"}))
	allowed(d)
	d.headers["x-nexus-approval-id"] == "none"
}

test_unknown_tool_is_404 if {
	denied(decide(tool_call("rm-rf", {}, {})), 404, {"nexus.tools.tool_unknown"})
}

test_invalid_tool_arguments_are_400 if {
	d := decide(tool_call("web-search", {}, {"query": 7}))
	denied(d, 400, {"nexus.tools.arguments_invalid"})
	d.reasons[0].controls == ["SOC2:PI1.2", "ISO27001:A.8.26", "ISO42001:A.9.4"]
	contains(d.reasons[0].message, "query: Invalid type. Expected: string, given: integer")
}

test_high_risk_tool_without_approval_is_403 if {
	d := decide(tool_call("payments-refund", {}, fx.refund_arguments))
	denied(d, 403, {"nexus.tools.approval_required"})
	d.reasons[0].controls == [
		"SOC2:CC6.3",
		"ISO27001:A.8.2",
		"EUAIACT:Art.14",
		"EUAIACT:Art.26",
		"HIPAA:164.312(b)",
		"PCI:7.2.3",
		"ISO42001:A.9.2",
	]
}

test_high_risk_tool_with_approval_is_allowed if {
	d := decide(tool_call("payments-refund", {"x-nexus-approval": fx.refund_approval}, fx.refund_arguments))
	allowed(d)
	d.response_headers_to_add == {"x-nexus-budget-warning": "tenant=85%"}
	d.headers["x-nexus-approval-id"] == "jti-fresh"
}

test_used_approval_is_403 if {
	used := fx.approval_token({
		"tenant": "acme", "tool": "payments-refund", "jti": "jti-used-once",
		"args_sha256": crypto.sha256(json.marshal(fx.refund_arguments)),
	})
	d := decide(tool_call("payments-refund", {"x-nexus-approval": used}, fx.refund_arguments))
	denied(d, 403, {"nexus.tools.approval_invalid"})
}

test_approval_is_refused_without_the_state_bundle if {
	d := decide_without_state(tool_call("payments-refund", {"x-nexus-approval": fx.refund_approval}, fx.refund_arguments))

	# Both refusals hold without state: the approval (no spent-id list) and the budget
	# (unknown spend); the 403 outranks the 503.
	denied(d, 403, {"nexus.tools.approval_invalid", "nexus.budget.state_unknown"})
}

test_approval_for_other_arguments_is_403 if {
	changed := object.union(fx.refund_arguments, {"amount": 9999})
	d := decide(tool_call("payments-refund", {"x-nexus-approval": fx.refund_approval}, changed))
	denied(d, 403, {"nexus.tools.approval_invalid"})
}

# Retention

test_recent_chat_is_readable if {
	allowed(decide(acme("GET", "/v1/chats/c-1", chat_record("acme", 3))))
}

test_chat_past_retention_is_410 if {
	d := decide(acme("GET", "/v1/chats/c-1", chat_record("acme", 45)))
	denied(d, 410, {"nexus.retention.retention_expired"})
	d.reasons[0].controls == ["GDPR:Art.5", "ISO27001:A.5.33", "ISO27001:A.8.10", "SOC2:C1.2"]
}

test_chat_read_without_a_record_token_is_400 if {
	denied(decide(acme("GET", "/v1/chats/c-1", {})), 400, {"nexus.retention.record_token_invalid"})
}

test_deletion_is_allowed_without_legal_hold if {
	allowed(decide(acme("DELETE", "/v1/chats/c-1", chat_record("acme", 1))))
}

test_erasure_under_legal_hold_is_403 if {
	d := decide(globex("DELETE", "/v1/subjects/u-42", {}))
	denied(d, 403, {"nexus.retention.legal_hold"})
	d.reasons[0].controls == ["GDPR:Art.17", "SOC2:P4.3", "ISO27001:A.5.33", "HIPAA:164.312(c)(1)"]
}

# Residency

test_eu_tenant_on_a_us_enforcer_is_403 if {
	d := decide_in(acme("POST", "/v1/chat/completions", {"x-nexus-model": "gpt-4o"}), fx.runtime_us)
	denied(d, 403, {"nexus.residency.jurisdiction_mismatch"})
	d.reasons[0].controls == ["GDPR:Art.44", "ISO27001:A.5.34", "SOC2:C1.1"]
}

test_unbound_tenant_on_any_enforcer_is_allowed if {
	# globex is over its cap, so without any spend
	d := authz.decision with input as globex("POST", "/v1/chat/completions", {"x-nexus-model": "gpt-4o"})
		with data.nexus.config as fx.config
		with data.nexus_state as fx.empty_state
		with opa.runtime as fx.runtime_us
	allowed(d)
}

# Shape

test_deny_body_is_the_json_of_the_reasons if {
	d := decide(acme("POST", "/v1/chat/completions", {"x-nexus-model": "gpt-9"}))
	d.body == json.marshal({"error": "denied", "reasons": [{
		"rule": "nexus.models.model_unknown",
		"message": `model "gpt-9" is not known`,
		"controls": ["SOC2:PI1.2", "ISO27001:A.8.26", "ISO42001:A.6.2.5", "ISO42001:A.9.4"],
	}]})
	object.keys(d) == {
		"allowed", "http_status", "headers", "response_headers_to_add",
		"request_headers_to_remove", "body", "reasons", "labels",
	}
}

# The decision log's choice of a tenant

opted_out_config := json.patch(fx.config, [{
	"op": "add",
	"path": "/tenants/acme/decision_log",
	"value": {"wait_for": "none"},
}])

decide_opted_out(req) := d if {
	d := authz.decision with input as req
		with data.nexus.config as opted_out_config
		with data.nexus_state as fx.state
		with time.now_ns as fx.now_ns
		with opa.runtime as fx.runtime_eu
}

test_a_tenants_decision_log_choice_is_in_its_allowed_and_denied_decisions if {
	chat := acme("POST", "/v1/chat/completions", {"x-nexus-model": "chat-default", "x-nexus-prompt": "support-agent"})
	allowed_decision := decide_opted_out(chat)
	allowed(allowed_decision)
	allowed_decision.decision_log == {"wait_for": "none"}

	denied_decision := decide_opted_out(acme("PUT", "/v1/admin", {}))
	denied_decision.allowed == false
	denied_decision.decision_log == {"wait_for": "none"}
}

test_a_tenant_without_a_choice_leaves_the_enforcers_default if {
	d := decide(acme("POST", "/v1/chat/completions", {"x-nexus-model": "chat-default", "x-nexus-prompt": "support-agent"}))
	not "decision_log" in object.keys(d)
	other := decide_opted_out(globex("POST", "/v1/chat/completions", {"x-nexus-model": "chat-default"}))
	not "decision_log" in object.keys(other)
}
