package system.log_test

import data.system.log

# A decision log event as OPA hands it to the mask policy.
event(headers) := {
	"decision_id": "0f6c2d8e-3a1b-4c55-9b0e-7d2f5a8c1e44",
	"path": "nexus/envoy/authz/decision",
	"input": {
		"attributes": {"request": {"http": {
			"method": "POST",
			"path": "/v1/tools/payments-refund:invoke",
			"headers": headers,
			"body": `{"arguments":{"order_id":"ord-1001"}}`,
		}}},
		"parsed_path": ["v1", "tools", "payments-refund:invoke"],
		"parsed_body": {"arguments": {"order_id": "ord-1001"}},
	},
}

removals := {
	"/input/attributes/request/http/body",
	"/input/attributes/request/http/raw_body",
	"/input/attributes/request/http/rawBody",
	"/input/attributes/request/http/headerMap",
	"/input/attributes/request/http/header_map",
	"/input/parsed_query",
	"/nd_builtin_cache/io.jwt.decode_verify",
	"/nd_builtin_cache/json.match_schema",
	"/nd_builtin_cache/opa.runtime",
}

secret_headers := {
	"authorization": "Bearer nx-acme-prod-1-0f3c9a",
	"x-nexus-approval": "eyJ.approval.token",
	"cookie": "session=1",
	"x-api-key": "nx-stray",
}

cached_builtins := {
	"io.jwt.decode_verify": {"[\"t\"]": [true, {}, {}]},
	"json.match_schema": {},
	"opa.runtime": {"[]": {"env": {}}},
	"time.now_ns": {"[]": 1},
}

upserts(masks) := {m | some m in masks; is_object(m)}

test_secrets_and_bodies_are_removed if {
	masks := log.mask with input as event({"authorization": "Bearer nx-acme-prod-1-0f3c9a", "x-nexus-tenant": "acme"})
	{m | some m in masks; is_string(m)} == removals
}

test_bearer_token_is_replaced_by_its_fingerprint if {
	masks := log.mask with input as event({"authorization": "Bearer nx-acme-prod-1-0f3c9a"})
	upserts(masks) == {{
		"op": "upsert",
		"path": "/input/attributes/request/http/headers/authorization",
		"value": concat("", ["sha256:", substring(crypto.sha256("nx-acme-prod-1-0f3c9a"), 0, 16)]),
	}}
}

test_fingerprint_matches_the_api_key_hash_prefix if {
	key_hash := crypto.sha256("nx-acme-prod-1-0f3c9a")
	masks := log.mask with input as event({"authorization": "bearer nx-acme-prod-1-0f3c9a"})
	some m in upserts(masks)
	startswith(key_hash, substring(m.value, 7, -1))
	count(m.value) == 23
}

test_other_authorization_schemes_are_fingerprinted_whole if {
	masks := log.mask with input as event({"authorization": "Basic YWxpY2U6c2VjcmV0"})
	some m in upserts(masks)
	m.value == concat("", ["sha256:", substring(crypto.sha256("Basic YWxpY2U6c2VjcmV0"), 0, 16)])
}

chat_event := object.union(event({"authorization": "Bearer k"}), {"input": {
	"attributes": {"request": {"http": {"path": "/v1/chat/completions?api_key=s3cret"}}},
	"parsed_path": ["v1", "chat", "completions"],
	"parsed_body": {"messages": [{"role": "user", "content": "my card is 4111"}]},
	"parsed_query": {"api_key": ["s3cret"]},
}})

test_tool_arguments_are_kept_for_the_audit if {
	masks := log.mask with input as event({"authorization": "Bearer k"})
	not "/input/parsed_body" in masks
}

test_other_bodies_are_removed if {
	masks := log.mask with input as object.union(chat_event, {"input": {"parsed_path": ["v1", "chats", "c-1"]}})
	"/input/parsed_body" in masks
}

test_a_chat_keeps_only_its_output_bounds if {
	masks := log.mask with input as chat_event
	not "/input/parsed_body" in masks
	{"op": "upsert", "path": "/input/parsed_body", "value": {}} in masks
	bounded := json.patch(chat_event, [{"op": "add", "path": "/input/parsed_body/max_tokens", "value": 50}])
	{"op": "upsert", "path": "/input/parsed_body", "value": {"max_tokens": 50}} in log.mask with input as bounded
}

test_a_chat_bound_that_is_not_a_number_is_logged_as_null if {
	text := {"op": "add", "path": "/input/parsed_body/max_completion_tokens", "value": "my card is 4111"}
	texty := json.patch(chat_event, [text])
	masks := log.mask with input as texty
	{"op": "upsert", "path": "/input/parsed_body", "value": {"max_completion_tokens": null}} in masks
}

test_a_chat_body_that_is_no_object_is_removed if {
	listed := json.patch(chat_event, [{"op": "replace", "path": "/input/parsed_body", "value": ["my card is 4111"]}])
	"/input/parsed_body" in log.mask with input as listed
}

test_query_strings_are_removed if {
	masks := log.mask with input as chat_event
	"/input/parsed_query" in masks
	{
		"op": "upsert",
		"path": "/input/attributes/request/http/path",
		"value": "/v1/chat/completions",
	} in masks
}

test_secret_headers_are_removed_when_present if {
	masks := log.mask with input as object.union(event(secret_headers), {"nd_builtin_cache": cached_builtins})
	{m | some m in masks; is_string(m)} == removals | {
		"/input/attributes/request/http/headers/x-nexus-approval",
		"/input/attributes/request/http/headers/cookie",
		"/input/attributes/request/http/headers/x-api-key",
	}
}

test_no_authorization_header_needs_no_upsert if {
	masks := log.mask with input as event({"x-nexus-tenant": "acme"})
	upserts(masks) == set()
	{m | some m in masks; is_string(m)} == removals
}
