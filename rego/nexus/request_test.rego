package nexus.request_test

import data.nexus.request
import data.nexus.test_fixtures as fx

reasons(input_doc) := rs if {
	rs := request.deny with input as input_doc
}

rules(input_doc) := {r.rule: r.status | some r in reasons(input_doc)}

route_of(method, path) := r if {
	r := request.route with input as fx.http_request(method, path, fx.acme_headers)
}

test_chat_completions_route if {
	route_of("POST", "/v1/chat/completions") == "chat.completions"
}

test_tool_invoke_route_names_the_tool if {
	req := fx.http_request("POST", "/v1/tools/web-search:invoke", fx.acme_headers)
	request.route == "tools.invoke" with input as req
	request.tool_id == "web-search" with input as req
}

test_chat_read_and_delete_routes if {
	route_of("GET", "/v1/chats/c-1") == "chats.read"
	route_of("DELETE", "/v1/chats/c-1") == "chats.delete"
}

test_subject_erasure_route if {
	route_of("DELETE", "/v1/subjects/u-42") == "subjects.erase"
}

test_query_string_does_not_change_the_route if {
	route_of("GET", "/v1/chats/c-1?include=messages") == "chats.read"
}

test_wrong_method_is_no_route if {
	route_of("GET", "/v1/chat/completions") == ""
	route_of("POST", "/v1/chats/c-1") == ""
	route_of("GET", "/v1/subjects/u-42") == ""
}

test_tool_path_without_verb_or_name_is_no_route if {
	route_of("POST", "/v1/tools/web-search") == ""
	route_of("POST", "/v1/tools/:invoke") == ""
	request.tool_id == "" with input as fx.http_request("POST", "/v1/tools/:invoke", fx.acme_headers)
}

test_known_route_with_tenant_is_not_refused if {
	count(reasons(fx.http_request("POST", "/v1/chat/completions", fx.acme_headers))) == 0
}

test_unknown_route_is_404 if {
	rs := reasons(fx.http_request("PUT", "/v1/admin?token=secret", fx.acme_headers))
	some r in rs
	r.rule == "nexus.request.unknown_route"
	r.status == 404
	r.message == "PUT /v1/admin is not a gateway route"
	r.controls == ["SOC2:CC6.1", "ISO27001:A.8.3", "HIPAA:164.312(a)(1)", "PCI:7.3.3"]
}

test_an_empty_id_is_not_a_route if {
	every method_path in [
		["GET", "/v1/chats/"],
		["DELETE", "/v1/chats/"],
		["DELETE", "/v1/subjects/"],
		["POST", "/v1/tools/"],
	] {
		route_of(method_path[0], method_path[1]) == ""
	}
}

test_a_trailing_slash_or_an_empty_segment_is_404 if {
	every path in ["/v1/chat/completions/", "/v1//chat/completions", "/v1/chats/c-1001/"] {
		rules(fx.http_request("POST", path, fx.acme_headers))["nexus.request.unknown_route"] == 404
	}
}

test_missing_tenant_header_is_400 if {
	rules(fx.http_request("POST", "/v1/chat/completions", {"authorization": "Bearer x"})) == {
		"nexus.request.tenant_header_missing": 400,
	}
}

test_empty_tenant_header_is_400 if {
	rules(fx.http_request("POST", "/v1/chat/completions", {"x-nexus-tenant": ""})) == {
		"nexus.request.tenant_header_missing": 400,
	}
}

test_input_without_http_request_is_refused if {
	rules({}) == {
		"nexus.request.unknown_route": 404,
		"nexus.request.tenant_header_missing": 400,
	}
}

test_header_lookup if {
	req := fx.http_request("GET", "/v1/chats/c-1", {"x-nexus-tenant": "acme", "x-nexus-data-class": "voice"})
	request.headers["x-nexus-data-class"] == "voice" with input as req
	request.tenant == "acme" with input as req
	not request.headers["x-nexus-model"] with input as req
}
