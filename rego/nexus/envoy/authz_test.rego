package nexus.envoy.authz_test

import data.nexus.envoy.authz
import data.nexus.test_fixtures as fx

reason(rule, status) := {
	"rule": rule,
	"message": concat(" ", ["because of", rule]),
	"controls": ["SOC2:CC6.1"],
	"status": status,
}

status_of(raw) := s if {
	s := authz.refusal_status with authz.raw_reasons as raw
}

test_status_follows_precedence if {
	status_of({reason("a", 429), reason("b", 401)}) == 401
	status_of({reason("a", 429), reason("b", 404), reason("c", 400)}) == 404
	status_of({reason("a", 429), reason("b", 403), reason("c", 400)}) == 400
	status_of({reason("a", 429), reason("b", 410), reason("c", 403)}) == 403
	status_of({reason("a", 429), reason("b", 410)}) == 410
	status_of({reason("a", 429)}) == 429
}

test_status_outside_the_precedence_list_is_403 if {
	status_of({reason("a", 418)}) == 403
}

test_reasons_are_sorted_and_drop_the_status if {
	rs := authz.reasons with authz.raw_reasons as {reason("z.rule", 429), reason("a.rule", 403), reason("m.rule", 400)}
	rs == [
		{"rule": "a.rule", "message": "because of a.rule", "controls": ["SOC2:CC6.1"]},
		{"rule": "m.rule", "message": "because of m.rule", "controls": ["SOC2:CC6.1"]},
		{"rule": "z.rule", "message": "because of z.rule", "controls": ["SOC2:CC6.1"]},
	]
}

test_request_stage_hides_later_stages if {
	req := fx.http_request("PUT", "/v1/admin", {"authorization": "Bearer nope"})
	rules := {r.rule | some r in authz.raw_reasons} with input as req with data.nexus.config as fx.config
	rules == {"nexus.request.unknown_route", "nexus.request.tenant_header_missing"}
}

test_credential_stage_hides_concerns if {
	# an unknown tenant and a missing model would be refused in stage 3
	req := fx.http_request("POST", "/v1/chat/completions", fx.api_key_headers("nobody", "nx-not-a-key"))
	rules := {r.rule | some r in authz.raw_reasons} with input as req with data.nexus.config as fx.config
	rules == {"nexus.identity.credential_invalid"}
}

test_no_reason_and_no_credential_is_undecided if {
	# only a policy defect can get here: every stage silenced, no credential
	req := fx.http_request("POST", "/v1/chat/completions", {"x-nexus-tenant": "acme"})
	d := authz.decision with input as req
		with data.nexus.config as fx.config
		with data.nexus.identity.deny as set()
		with authz.concern_reasons as set()
	d.allowed == false
	d.http_status == 403
	d.reasons == [{
		"rule": "nexus.envoy.authz.undecided",
		"message": "the policy reached no decision",
		"controls": ["SOC2:CC6.1"],
	}]
	json.unmarshal(d.body) == {"error": "denied", "reasons": d.reasons}
}

test_undecidable_allowed_falls_back_to_the_default_refusal if {
	d := authz.decision with authz.allowed as null
	d.allowed == false
	d.http_status == 403
	d.reasons == [{
		"rule": "nexus.envoy.authz.undecided",
		"message": "the policy reached no decision",
		"controls": ["SOC2:CC6.1"],
	}]
	json.unmarshal(d.body) == {"error": "denied", "reasons": d.reasons}
}

# The entry point asks tools and retention for reasons only on their own
# routes (tools.routes, retention.routes). These prove that nothing is lost
# by that: on every other route, with every header and body those modules
# read (an approval token, a record token of a held class, tool arguments,
# a tool-shaped path segment), their deny sets are empty.
provocative_headers := object.union_n([
	fx.acme_headers,
	{"x-nexus-approval": fx.refund_approval},
	fx.record_headers("acme", "c-1", "chat-history", 10000),
])

every_route_request := [fx.with_body(req, {"arguments": fx.refund_arguments}) |
	some [method, path] in [
		["POST", "/v1/chat/completions"],
		["GET", "/v1/chats/c-1"],
		["DELETE", "/v1/chats/c-1"],
		["DELETE", "/v1/subjects/s-1"],
		["POST", "/v1/tools/refund:invoke"],
		["GET", "/v1/tools/refund:invoke"],
		["PUT", "/v1/admin"],
		["DELETE", "/v1/chats/c-1:invoke"],
	]
	req := fx.http_request(method, path, provocative_headers)
]

concern_deny(concern, req) := rs if {
	rs := data.nexus[concern].deny with input as req
		with data.nexus.config as fx.config
		with data.nexus_state as fx.state
		with opa.runtime as fx.runtime_eu
		with time.now_ns as fx.now_ns
}

concern_route(req) := r if {
	r := data.nexus.request.route with input as req
}

outside_routes(concern) := [req |
	some req in every_route_request
	not data.nexus[concern].routes[concern_route(req)]
]

test_tools_and_retention_deny_nothing_outside_their_routes if {
	every concern in ["tools", "retention"] {
		count(outside_routes(concern)) >= 4
		every req in outside_routes(concern) {
			concern_deny(concern, req) == set()
		}
	}
}
