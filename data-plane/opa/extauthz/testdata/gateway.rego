# METADATA
# title: Benchmark gateway policy
# description: |
#   A small, realistic gateway decision for the benchmarks: the credential
#   looked up by its SHA-256, the tenant header checked against it, the
#   route from parsed_path, a per-tenant grant, a model entitlement, and
#   reasons with control ids; the shape of data.nexus.envoy.authz.decision.
package bench.gateway

headers := input.attributes.request.http.headers

bearer := trim_space(substring(headers.authorization, 7, -1)) if {
	lower(substring(headers.authorization, 0, 7)) == "bearer "
}

key := data.bench.api_keys[crypto.sha256(bearer)]

route := "chat.completions" if {
	input.attributes.request.http.method == "POST"
	input.parsed_path == ["v1", "chat", "completions"]
}

route := "tools.invoke" if {
	input.attributes.request.http.method == "POST"
	input.parsed_path = ["v1", "tools", _]
}

permissions := {"chat.completions": "chat:completions", "tools.invoke": "tools:invoke"}

deny contains {"rule": "unknown_route", "message": "not a gateway route", "controls": ["SOC2:CC6.1"], "status": 404} if not route

deny contains {"rule": "credential_invalid", "message": "unknown credential", "controls": ["SOC2:CC6.1"], "status": 401} if not key

deny contains {"rule": "tenant_mismatch", "message": "credential of another tenant", "controls": ["SOC2:CC6.1"], "status": 403} if {
	key.tenant != headers["x-nexus-tenant"]
}

# METADATA
# title: Permission granted
# labels:
#   controls:
#     - SOC2:CC6.1
#     - ISO27001:A.5.15
granted if data.bench.grants[key.tenant][key.subject][permissions[route]]

deny contains {"rule": "permission_denied", "message": "no grant", "controls": ["SOC2:CC6.1", "ISO27001:A.5.15"], "status": 403} if {
	route
	not granted
}

deny contains {"rule": "model_not_entitled", "message": "model not in plan", "controls": ["SOC2:CC6.1"], "status": 403} if {
	route == "chat.completions"
	not data.bench.models[headers["x-nexus-model"]].plans[data.bench.tenants[key.tenant].plan]
}

reasons := [{"rule": r.rule, "message": r.message, "controls": r.controls} | some r in deny]

default decision := {"allowed": false, "http_status": 403, "headers": {"content-type": "application/json"}, "body": "{}", "reasons": []}

decision := {
	"allowed": true,
	"http_status": 200,
	"headers": {"x-nexus-route-model": headers["x-nexus-model"]},
	"response_headers_to_add": {},
	"request_headers_to_remove": ["authorization"],
	"body": "",
	"reasons": [],
} if count(deny) == 0

decision := {
	"allowed": false,
	"http_status": min({r.status | some r in deny}),
	"headers": {"content-type": "application/json"},
	"response_headers_to_add": {},
	"request_headers_to_remove": [],
	"body": json.marshal({"error": "denied", "reasons": reasons}),
	"reasons": reasons,
} if count(deny) > 0
