package nexus.tenants_test

import data.nexus.tenants
import data.nexus.test_fixtures as fx

reasons_for(tenant) := rs if {
	headers := {"authorization": fx.bearer(fx.acme_api_key), "x-nexus-tenant": tenant}
	rs := tenants.deny with input as fx.http_request("POST", "/v1/chat/completions", headers)
		with data.nexus.config as fx.config
}

test_active_tenant_is_served if {
	count(reasons_for("acme")) == 0
}

test_unknown_tenant_is_403 if {
	reasons_for("nobody") == {{
		"rule": "nexus.tenants.unknown_tenant",
		"message": `tenant "nobody" is not known`,
		"controls": ["SOC2:CC6.1", "ISO27001:A.5.15", "HIPAA:164.312(a)(1)", "PCI:7.3.3"],
		"status": 403,
	}}
}

test_suspended_tenant_is_403 if {
	reasons_for("initech") == {{
		"rule": "nexus.tenants.tenant_suspended",
		"message": `tenant "initech" is suspended`,
		"controls": ["SOC2:CC6.1", "SOC2:CC6.2", "ISO27001:A.5.18", "HIPAA:164.308(a)(4)(ii)(C)", "PCI:7.3.1"],
		"status": 403,
	}}
}

test_tenant_without_status_is_refused if {
	config := json.patch(fx.config, [{"op": "remove", "path": "/tenants/acme/status"}])
	rs := tenants.deny with input as fx.http_request("POST", "/v1/chat/completions", fx.acme_headers)
		with data.nexus.config as config
	{r.rule | some r in rs} == {"nexus.tenants.tenant_suspended"}
}

test_missing_tenant_header_is_left_to_the_request_stage if {
	count(reasons_for("")) == 0
}
