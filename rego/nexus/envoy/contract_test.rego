# Every shape of decision the library produces matches the decision-result
# JSON Schema of nexus_contract (loaded as data.decision_result), the one the
# ext_authz plugin, the audit intake and the SDK are pinned to.
package nexus.envoy.contract_test

import data.nexus.envoy.authz
import data.nexus.test_fixtures as fx

decide(req) := d if {
	d := authz.decision with input as req
		with data.nexus.config as fx.config
		with data.nexus_state as fx.state
		with time.now_ns as fx.now_ns
		with opa.runtime as fx.runtime_eu
}

matches_contract(decision) if {
	[ok, _] := json.match_schema(decision, data.decision_result)
	ok
}

acme_chat(model) := fx.http_request(
	"POST", "/v1/chat/completions",
	object.union(fx.api_key_headers("acme", fx.acme_api_key), {"x-nexus-model": model}),
)

test_an_allowed_decision_matches_the_contract_schema if {
	d := decide(acme_chat("gpt-4o"))
	d.allowed == true
	matches_contract(d)
}

test_a_refusal_matches_the_contract_schema if {
	d := decide(fx.http_request("POST", "/v1/chat/completions", {"x-nexus-tenant": "acme"}))
	d.allowed == false
	matches_contract(d)
}

test_an_unknown_route_matches_the_contract_schema if {
	d := decide(fx.http_request("PUT", "/v1/admin", {}))
	d.http_status == 404
	matches_contract(d)
}

test_the_default_refusal_matches_the_contract_schema if {
	d := authz.decision with authz.allowed as null
	matches_contract(d)
}
