package nexus.residency_test

import data.nexus.residency
import data.nexus.test_fixtures as fx

chat_for(tenant) := fx.http_request("POST", "/v1/chat/completions", fx.api_key_headers(tenant, "unused"))

reasons(tenant, runtime) := {[r.rule, r.status, r.message] | some r in rs} if {
	rs := residency.deny with input as chat_for(tenant) with data.nexus.config as fx.config with opa.runtime as runtime
}

test_tenant_in_its_jurisdiction_is_served if {
	reasons("acme", fx.runtime_eu) == set()
	reasons("umbrella", fx.runtime_us) == set()
}

test_unbound_tenant_is_served_anywhere if {
	every runtime in [fx.runtime_eu, fx.runtime_us, {"config": {}}] {
		reasons("globex", runtime) == set()
	}
}

test_region_of_another_jurisdiction_is_403 if {
	reasons("acme", fx.runtime_us) == {[
		"nexus.residency.jurisdiction_mismatch", 403,
		`tenant "acme" is bound to "eu"; region "us-east-1" is in "us"`,
	]}
}

test_residency_controls if {
	rs := residency.deny with input as chat_for("umbrella")
		with data.nexus.config as fx.config
		with opa.runtime as fx.runtime_eu
	{r.controls | some r in rs} == {["GDPR:Art.44", "ISO27001:A.5.34", "SOC2:C1.1"]}
}

test_enforcer_without_region_is_403_for_bound_tenants if {
	reasons("acme", {"config": {"labels": {}}}) == {[
		"nexus.residency.region_unknown", 403,
		`tenant "acme" is bound to "eu" and this enforcer has no region label`,
	]}
}

test_enforcer_in_an_unknown_region_is_403_for_bound_tenants if {
	reasons("acme", {"config": {"labels": {"region": "mars-1"}}}) == {[
		"nexus.residency.region_unknown", 403,
		`tenant "acme" is bound to "eu" and this enforcer's region "mars-1" is not in the region list`,
	]}
}

test_unbound_tenant_does_not_read_the_runtime if {
	not residency.region with input as chat_for("globex")
		with data.nexus.config as fx.config
		with opa.runtime as fx.runtime_eu
}
