package nexus.tools_test

import data.nexus.test_fixtures as fx
import data.nexus.tools

invoke(tool, headers, body) := fx.with_body(
	fx.http_request("POST", concat("", ["/v1/tools/", tool, ":invoke"]), object.union(fx.acme_headers, headers)),
	body,
)

refund(headers, arguments) := invoke("payments-refund", headers, {"arguments": arguments})

reasons(req) := {[r.rule, r.status, r.message] | some r in rs} if {
	rs := tools.deny with input as req with data.nexus.config as fx.config with data.nexus_state as fx.state
		with time.now_ns as fx.now_ns
}

verified(req) := v if {
	v := tools.approval_verified with input as req with data.nexus.config as fx.config
		with data.nexus_state as fx.state with time.now_ns as fx.now_ns
}

refund_token(claims) := fx.approval_token(object.union(
	{
		"tenant": "acme", "tool": "payments-refund",
		"args_sha256": crypto.sha256(json.marshal(fx.refund_arguments)),
	},
	claims,
))

without_claim(name) := fx.sign(fx.keys.approval_ec, object.remove(
	fx.approval_claims({
		"tenant": "acme", "tool": "payments-refund",
		"args_sha256": crypto.sha256(json.marshal(fx.refund_arguments)),
	}),
	[name],
))

malformed := "it lacks iat, exp, jti (1-128 characters) or subject"

unverified := "it failed ES256 verification of its signature, issuer, audience or expiry"

approval_failure(message) := {[
	"nexus.tools.approval_invalid", 403,
	concat("", [`the approval for tool "payments-refund" is not valid: `, message]),
]}

test_valid_low_risk_call_is_allowed if {
	reasons(invoke("web-search", {"x-nexus-tool": "web-search"}, {"arguments": {"query": "opa"}})) == set()
}

test_other_routes_are_not_tool_calls if {
	reasons(fx.http_request("POST", "/v1/chat/completions", fx.acme_headers)) == set()
}

test_unknown_tool_is_404 if {
	rs := tools.deny with input as invoke("rm-rf", {}, {"arguments": {}}) with data.nexus.config as fx.config
	rs == {{
		"rule": "nexus.tools.tool_unknown",
		"message": `tool "rm-rf" is not known`,
		"controls": ["SOC2:CC6.3", "ISO27001:A.8.2", "ISO42001:A.9.4"],
		"status": 404,
	}}
}

test_tool_header_must_match_the_path if {
	reasons(invoke("web-search", {"x-nexus-tool": "payments-refund"}, {"arguments": {"query": "opa"}})) == {[
		"nexus.tools.tool_header_mismatch", 400,
		`x-nexus-tool "payments-refund" does not match the tool "web-search" in the path`,
	]}
}

test_missing_arguments_are_400 if {
	reasons(fx.http_request("POST", "/v1/tools/web-search:invoke", fx.acme_headers)) == {[
		"nexus.tools.arguments_missing", 400,
		`the call to tool "web-search" needs a complete JSON body with "arguments"`,
	]}
	without_body := fx.http_request("POST", "/v1/tools/web-search:invoke", fx.acme_headers)
	reasons(invoke("web-search", {}, {"query": "opa"})) == reasons(without_body)
}

test_truncated_body_is_not_trusted if {
	req := object.union(invoke("web-search", {}, {"arguments": {"query": "opa"}}), {"truncated_body": true})
	{r[0] | some r in reasons(req)} == {"nexus.tools.arguments_missing"}
}

test_arguments_must_match_the_schema if {
	reasons(invoke("web-search", {}, {"arguments": {"query": 7, "limit": 3}})) == {[
		"nexus.tools.arguments_invalid", 400,
		concat("", [
			`the arguments of tool "web-search" do not match its schema: `,
			"(Root): Additional property limit is not allowed; query: Invalid type. Expected: string, given: integer",
		]),
	]}
}

test_tool_without_a_schema_refuses_arguments if {
	config := json.patch(fx.config, [{"op": "remove", "path": "/tools/web-search/schema"}])
	rs := tools.deny with input as invoke("web-search", {}, {"arguments": {"query": "opa"}})
		with data.nexus.config as config
	{r.message | some r in rs} == {concat("", [
		`the arguments of tool "web-search" do not match its schema: `,
		"the tool has no usable schema",
	])}
}

test_approved_high_risk_call_is_allowed if {
	req := refund({"x-nexus-approval": fx.refund_approval}, fx.refund_arguments)
	reasons(req) == set()
	verified(req)
}

test_approval_for_the_caller_is_allowed if {
	token := refund_token({"subject": "apikey:acme-prod-1"})
	verified(refund({"x-nexus-approval": token}, fx.refund_arguments))
}

test_approval_without_a_subject_is_403 if {
	token := without_claim("subject")
	reasons(refund({"x-nexus-approval": token}, fx.refund_arguments)) == approval_failure(malformed)
}

test_approval_with_an_empty_subject_is_403 if {
	token := refund_token({"subject": ""})
	reasons(refund({"x-nexus-approval": token}, fx.refund_arguments)) == approval_failure(malformed)
}

test_approval_without_a_jti_is_403 if {
	reasons(refund({"x-nexus-approval": without_claim("jti")}, fx.refund_arguments)) == approval_failure(malformed)
}

test_approval_with_a_non_string_or_huge_jti_is_403 if {
	numeric := refund_token({"jti": 7})
	reasons(refund({"x-nexus-approval": numeric}, fx.refund_arguments)) == approval_failure(malformed)
	huge := refund_token({"jti": concat("", [x | some _ in numbers.range(1, 129); x := "a"])})
	reasons(refund({"x-nexus-approval": huge}, fx.refund_arguments)) == approval_failure(malformed)
}

test_approval_without_iat_is_403 if {
	reasons(refund({"x-nexus-approval": without_claim("iat")}, fx.refund_arguments)) == approval_failure(malformed)
}

test_approval_with_a_string_iat_is_403 if {
	token := refund_token({"iat": "yesterday"})
	reasons(refund({"x-nexus-approval": token}, fx.refund_arguments)) == approval_failure(malformed)
}

test_approval_living_longer_than_its_risk_cap_is_403 if {
	# payments-refund is high risk: 1800 s at most in the fixture's config.
	token := refund_token({"exp": fx.now_s + 1801})
	reasons(refund({"x-nexus-approval": token}, fx.refund_arguments)) == approval_failure(concat("", [
		"it lives 1801 s (exp - iat), more than the 1800 s allowed for high risk tools, ",
		"or was issued in the future",
	]))
	verified(refund({"x-nexus-approval": refund_token({"exp": fx.now_s + 1800})}, fx.refund_arguments))
}

test_critical_tools_use_their_own_cap if {
	config := json.patch(fx.config, [{"op": "replace", "path": "/tools/payments-refund/risk", "value": "critical"}])
	long := refund({"x-nexus-approval": refund_token({"exp": fx.now_s + 901})}, fx.refund_arguments)
	not tools.approval_verified with input as long with data.nexus.config as config
		with data.nexus_state as fx.state with time.now_ns as fx.now_ns
	short := refund({"x-nexus-approval": refund_token({"exp": fx.now_s + 900})}, fx.refund_arguments)
	tools.approval_verified with input as short with data.nexus.config as config
		with data.nexus_state as fx.state with time.now_ns as fx.now_ns
}

test_approval_issued_in_the_future_is_403 if {
	# Short on paper (exp - iat = 300 s) but valid for a year from now.
	year := (365 * 24) * 3600
	token := refund_token({"iat": fx.now_s + year, "nbf": fx.now_s, "exp": (fx.now_s + year) + 300})
	not verified(refund({"x-nexus-approval": token}, fx.refund_arguments))
	skewed := refund_token({"iat": fx.now_s + 30, "exp": fx.now_s + 330})
	verified(refund({"x-nexus-approval": skewed}, fx.refund_arguments))
}

test_risk_level_without_a_cap_refuses_approvals if {
	config := json.patch(fx.config, [{"op": "remove", "path": "/approval/max_ttl_s/high"}])
	rs := tools.deny with input as refund({"x-nexus-approval": fx.refund_approval}, fx.refund_arguments)
		with data.nexus.config as config with data.nexus_state as fx.state with time.now_ns as fx.now_ns
	{r.message | some r in rs} == {concat("", [
		`the approval for tool "payments-refund" is not valid: `,
		"no approval lifetime is configured for high risk tools",
	])}
}

test_used_approval_is_403 if {
	token := refund_token({"jti": "jti-used-once"})
	reasons(refund({"x-nexus-approval": token}, fx.refund_arguments)) == approval_failure("it was already used")
}

test_approval_is_refused_until_the_state_bundle_is_loaded if {
	req := refund({"x-nexus-approval": fx.refund_approval}, fx.refund_arguments)
	rs := tools.deny with input as req with data.nexus.config as fx.config with time.now_ns as fx.now_ns
	{r.message | some r in rs} == {concat("", [
		`the approval for tool "payments-refund" is not valid: `,
		"this enforcer has not loaded which approvals are used (state bundle missing)",
	])}
	without_used := json.patch(fx.state, [{"op": "remove", "path": "/approvals"}])
	not tools.approval_verified with input as req with data.nexus.config as fx.config
		with data.nexus_state as without_used with time.now_ns as fx.now_ns
}

test_missing_approval_is_403 if {
	req := refund({}, fx.refund_arguments)
	reasons(req) == {[
		"nexus.tools.approval_required", 403,
		`tool "payments-refund" (risk high) needs an approval token in x-nexus-approval`,
	]}
	not verified(req)
}

test_approval_signed_by_another_key_is_403 if {
	forged := io.jwt.encode_sign(
		{"alg": "ES256", "kid": "approval_ec"},
		fx.approval_claims({
			"tenant": "acme", "tool": "payments-refund",
			"args_sha256": crypto.sha256(json.marshal(fx.refund_arguments)),
		}),
		fx.keys.rogue_ec.private,
	)
	reasons(refund({"x-nexus-approval": forged}, fx.refund_arguments)) == approval_failure(unverified)
}

test_approval_with_another_algorithm_is_403 if {
	rs256 := io.jwt.encode_sign(
		{"alg": "RS256", "kid": "approval_ec"},
		fx.approval_claims({
			"tenant": "acme", "tool": "payments-refund",
			"args_sha256": crypto.sha256(json.marshal(fx.refund_arguments)),
		}),
		fx.keys.idp_rsa.private,
	)
	req := refund({"x-nexus-approval": rs256}, fx.refund_arguments)
	{r[0] | some r in reasons(req)} == {"nexus.tools.approval_invalid"}
}

test_expired_approval_is_403 if {
	token := fx.approval_token({
		"tenant": "acme", "tool": "payments-refund", "exp": fx.now_s - 1,
		"args_sha256": crypto.sha256(json.marshal(fx.refund_arguments)),
	})
	reasons(refund({"x-nexus-approval": token}, fx.refund_arguments)) == approval_failure(unverified)
}

test_approval_without_expiry_is_403 if {
	claims := object.remove(
		fx.approval_claims({
			"tenant": "acme", "tool": "payments-refund",
			"args_sha256": crypto.sha256(json.marshal(fx.refund_arguments)),
		}),
		["exp"],
	)
	token := fx.sign(fx.keys.approval_ec, claims)
	not verified(refund({"x-nexus-approval": token}, fx.refund_arguments))
}

test_approval_from_another_issuer_is_403 if {
	token := fx.approval_token({
		"iss": "someone-else", "tenant": "acme", "tool": "payments-refund",
		"args_sha256": crypto.sha256(json.marshal(fx.refund_arguments)),
	})
	not verified(refund({"x-nexus-approval": token}, fx.refund_arguments))
}

test_approval_for_another_tenant_is_403 if {
	token := fx.approval_token({
		"tenant": "globex", "tool": "payments-refund",
		"args_sha256": crypto.sha256(json.marshal(fx.refund_arguments)),
	})
	req := refund({"x-nexus-approval": token}, fx.refund_arguments)
	reasons(req) == approval_failure("it was issued for another tenant")
}

test_approval_for_another_tool_is_403 if {
	token := fx.approval_token({
		"tenant": "acme", "tool": "web-search",
		"args_sha256": crypto.sha256(json.marshal(fx.refund_arguments)),
	})
	reasons(refund({"x-nexus-approval": token}, fx.refund_arguments)) == approval_failure("it was issued for another tool")
}

test_approval_for_other_arguments_is_403 if {
	changed := object.union(fx.refund_arguments, {"amount": 2500})
	reasons(refund({"x-nexus-approval": fx.refund_approval}, changed)) == approval_failure("it covers other arguments")
}

test_approval_for_another_subject_is_403 if {
	token := fx.approval_token({
		"tenant": "acme", "tool": "payments-refund", "subject": "user:mallory@acme.example",
		"args_sha256": crypto.sha256(json.marshal(fx.refund_arguments)),
	})
	req := refund({"x-nexus-approval": token}, fx.refund_arguments)
	reasons(req) == approval_failure("it was issued to another subject")
}

test_approval_is_ignored_where_none_is_needed if {
	req := invoke("web-search", {"x-nexus-approval": "garbage"}, {"arguments": {"query": "opa"}})
	reasons(req) == set()
	not verified(req)
}

test_argument_digest_is_over_sorted_compact_json if {
	digest := crypto.sha256(`{"amount":25.5,"order_id":"ord-1001"}`)
	tools.arguments_sha256 == digest with input as refund({}, fx.refund_arguments)
		with data.nexus.config as fx.config
}
