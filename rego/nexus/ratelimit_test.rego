package nexus.ratelimit_test

import data.nexus.envoy.authz
import data.nexus.ratelimit
import data.nexus.test_fixtures as fx

config := {
	"tenants": {"acme": {"plan": "enterprise"}, "umbrella": {"plan": "free"}},
	"api_keys": {
		"h-acme": {"tenant": "acme", "subject": "apikey:acme-ci"},
		"h-umbrella": {"tenant": "umbrella", "subject": "apikey:umbrella-app"},
	},
	"rate_limits": {
		"all-tenants": limit({}),
		"free-plan": limit({"plans": {"free": true}, "key": "credential"}),
		"acme-chat": limit({"tenants": {"acme": true}, "routes": {"chat.completions": true}}),
		"search-tool": limit({"routes": {"tools.invoke": true}, "tools": {"web-search": true}}),
	},
}

limit(overrides) := object.union(
	{
		"scope": "shared", "key": "tenant", "counts": "requests", "unit": "minute",
		"rate": 10, "burst": 10, "tenants": {}, "plans": {}, "routes": {}, "tools": {},
	},
	overrides,
)

call(key_hash, path) := {
	"attributes": {"request": {"http": {"method": "POST", "headers": {}}}},
	"parsed_path": path,
	"nexus": {"credential_sha256": key_hash},
}

test_every_applicable_limit_names_the_credentials_bucket if {
	buckets := ratelimit.buckets with data.nexus.config as config
		with input as call("h-acme", ["v1", "chat", "completions"])
	buckets == {"all-tenants": "acme", "acme-chat": "acme"}
}

test_plan_and_credential_key if {
	buckets := ratelimit.buckets with data.nexus.config as config
		with input as call("h-umbrella", ["v1", "chat", "completions"])
	buckets == {"all-tenants": "umbrella", "free-plan": "apikey:umbrella-app"}
}

test_tool_limits_select_by_tool if {
	on_search := ratelimit.buckets with data.nexus.config as config
		with input as call("h-acme", ["v1", "tools", "web-search:invoke"])
	on_search == {"all-tenants": "acme", "search-tool": "acme"}
	on_other := ratelimit.buckets with data.nexus.config as config
		with input as call("h-acme", ["v1", "tools", "crm-lookup:invoke"])
	on_other == {"all-tenants": "acme"}
}

test_unknown_credential_counts_against_no_bucket if {
	buckets := ratelimit.buckets with data.nexus.config as config
		with input as call("h-nobody", ["v1", "chat", "completions"])
	buckets == {}
}

test_no_rate_limits_no_buckets if {
	buckets := ratelimit.buckets with data.nexus.config as object.remove(config, ["rate_limits"])
		with input as call("h-acme", ["v1", "chat", "completions"])
	buckets == {}
}

# Through the whole decision: an allowed request carries its buckets as
# Envoy dynamic metadata; a refused one counts against none.
limited_config := object.union(fx.config, {"rate_limits": {"per-tenant": limit({})}})

decide(req) := d if {
	d := authz.decision with input as req
		with data.nexus.config as limited_config
		with data.nexus_state as fx.state
		with time.now_ns as fx.now_ns
		with opa.runtime as fx.runtime_eu
}

test_allowed_decision_carries_the_buckets_as_dynamic_metadata if {
	headers := object.union(fx.api_key_headers("acme", fx.acme_api_key), {"x-nexus-model": "gpt-4o"})
	d := decide(fx.http_request("POST", "/v1/chat/completions", headers))
	d.allowed == true
	d.dynamic_metadata == {"ratelimit": {"per-tenant": "acme"}}
}

test_refused_decision_counts_against_no_bucket if {
	headers := object.union(fx.api_key_headers("acme", fx.acme_api_key), {"x-nexus-tenant": "globex"})
	d := decide(fx.http_request("POST", "/v1/chat/completions", headers))
	d.allowed == false
	not d.dynamic_metadata
}
