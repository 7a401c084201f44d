# METADATA
# title: Request
# description: |
#   Maps Envoy's CheckRequest onto the five gateway routes and gives the
#   other concerns one way to read headers. Stage 1 of the decision: a
#   request refused here is refused before any credential is examined.
package nexus.request

import data.nexus.reason

# Envoy lowercases header names before ext_authz sees them, so concerns
# look headers up by their lowercase name: headers["x-nexus-model"].
default headers := {}

headers := input.attributes.request.http.headers

default method := ""

method := input.attributes.request.http.method

# The tool id is the last path segment without its ":invoke" verb
# (Google AIP-136 custom-method style).
default tool_id := ""

tool_id := id if {
	input.parsed_path = ["v1", "tools", segment]
	endswith(segment, ":invoke")
	id := trim_suffix(segment, ":invoke")
	id != ""
}

# Conditions on input itself, not on helper rules, let OPA's rule index
# pick the one matching definition instead of trying all five. An id is
# never empty: "/v1/chats/" (and "/v1/chats/." as Envoy normalises it) is
# not a read of chat "", and an upstream would route it as another path.
default route := ""

route := "chat.completions" if {
	input.attributes.request.http.method == "POST"
	input.parsed_path == ["v1", "chat", "completions"]
}

route := "tools.invoke" if {
	input.attributes.request.http.method == "POST"
	input.parsed_path = ["v1", "tools", _]
	tool_id != ""
}

route := "chats.read" if {
	input.attributes.request.http.method == "GET"
	input.parsed_path = ["v1", "chats", id]
	id != ""
}

route := "chats.delete" if {
	input.attributes.request.http.method == "DELETE"
	input.parsed_path = ["v1", "chats", id]
	id != ""
}

route := "subjects.erase" if {
	input.attributes.request.http.method == "DELETE"
	input.parsed_path = ["v1", "subjects", id]
	id != ""
}

default tenant := ""

tenant := headers["x-nexus-tenant"]

# The query string is left out of messages: it may carry secrets, and
# messages reach both the client and the decision log.
described_request := sprintf("%s /%s", [method, concat("/", object.get(input, "parsed_path", []))])

# METADATA
# title: Unknown route
# description: |
#   Only the five gateway routes are served. Anything else is refused
#   before the credential is looked at, so unknown paths reveal nothing.
# custom:
#   id: nexus.request.unknown_route
#   status: 404
# labels:
#   controls:
#     - SOC2:CC6.1
#     - ISO27001:A.8.3
#     - HIPAA:164.312(a)(1)
#     - PCI:7.3.3
deny contains reason.build(rego.metadata.rule(), msg) if {
	route == ""
	msg := sprintf("%s is not a gateway route", [described_request])
}

# METADATA
# title: Tenant header missing
# description: |
#   Every request names the tenant it acts in with x-nexus-tenant; the
#   credential is later checked against it, which keeps tenants apart.
# custom:
#   id: nexus.request.tenant_header_missing
#   status: 400
# labels:
#   controls:
#     - SOC2:CC6.1
#     - ISO27001:A.8.3
#     - HIPAA:164.312(a)(1)
#     - PCI:7.3.3
deny contains reason.build(rego.metadata.rule(), "the x-nexus-tenant header is required") if {
	tenant == ""
}
