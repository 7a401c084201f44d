package nexus.rbac_test

import data.nexus.rbac
import data.nexus.test_fixtures as fx

decide(method, path, headers) := {"granted": granted, "permission": permission, "reasons": reasons} if {
	req := fx.http_request(method, path, headers)
	granted := rbac.granted with input as req with data.nexus.config as fx.config
	permission := rbac.permission with input as req with data.nexus.config as fx.config
	reasons := rbac.deny with input as req with data.nexus.config as fx.config
}

alice_headers := {"authorization": fx.bearer(fx.alice_token), "x-nexus-tenant": "acme"}

test_route_permissions if {
	decide("POST", "/v1/chat/completions", fx.acme_headers).permission == "chat:completions"
	decide("GET", "/v1/chats/c-1", fx.acme_headers).permission == "chats:read"
	decide("DELETE", "/v1/chats/c-1", fx.acme_headers).permission == "chats:delete"
	decide("DELETE", "/v1/subjects/u-1", fx.acme_headers).permission == "subjects:erase"
}

test_tool_call_needs_the_tools_permission if {
	decide("POST", "/v1/tools/web-search:invoke", fx.acme_headers).permission == "tools:web-search"
}

test_granted_permission_is_allowed if {
	d := decide("POST", "/v1/chat/completions", fx.acme_headers)
	d.granted
	count(d.reasons) == 0
}

test_grant_to_a_jwt_subject if {
	d := decide("DELETE", "/v1/subjects/u-1", alice_headers) with time.now_ns as fx.now_ns
	d.granted
	count(d.reasons) == 0
}

test_missing_grant_is_403 if {
	d := decide("DELETE", "/v1/subjects/u-1", fx.acme_headers)
	not d.granted
	d.reasons == {{
		"rule": "nexus.rbac.permission_denied",
		"message": `apikey:acme-prod-1 lacks permission "subjects:erase" in tenant "acme"`,
		"controls": [
			"SOC2:CC6.1",
			"SOC2:CC6.3",
			"ISO27001:A.5.15",
			"ISO27001:A.8.3",
			"HIPAA:164.312(a)(1)",
			"HIPAA:164.308(a)(4)(ii)(B)",
			"PCI:7.3.1",
			"PCI:7.3.2",
			"PCI:10.2.1.4",
		],
		"status": 403,
	}}
}

test_grants_do_not_cross_tenants if {
	headers := fx.api_key_headers("globex", fx.acme_api_key)
	{r.rule | some r in decide("POST", "/v1/chat/completions", headers).reasons} == {"nexus.rbac.permission_denied"}
}

test_missing_tool_grant_is_403 if {
	headers := fx.api_key_headers("globex", fx.globex_api_key)
	d := decide("POST", "/v1/tools/payments-refund:invoke", headers)
	{r.message | some r in d.reasons} == {`apikey:globex-ci lacks permission "tools:payments-refund" in tenant "globex"`}
}

test_tool_without_permission_is_refused if {
	d := decide("POST", "/v1/tools/legacy-export:invoke", fx.acme_headers)
	d.permission == ""
	{r.rule | some r in d.reasons} == {"nexus.rbac.permission_denied"}
}

test_unknown_tool_is_left_to_the_tools_concern if {
	count(decide("POST", "/v1/tools/nope:invoke", fx.acme_headers).reasons) == 0
}

test_unknown_route_is_left_to_the_request_stage if {
	count(decide("PATCH", "/v1/chats/c-1", fx.acme_headers).reasons) == 0
}

test_anonymous_caller_holds_no_grant if {
	d := decide("POST", "/v1/chat/completions", {"x-nexus-tenant": "acme"})
	not d.granted
	{r.rule | some r in d.reasons} == {"nexus.rbac.permission_denied"}
}
