package nexus.retention_test

import data.nexus.retention
import data.nexus.test_fixtures as fx

request_for(tenant, method, path, headers) := fx.http_request(
	method, path,
	object.union(fx.api_key_headers(tenant, "unused"), headers),
)

read(tenant, headers) := request_for(tenant, "GET", "/v1/chats/c-1", headers)

reasons(req) := {[r.rule, r.status, r.message] | some r in rs} if {
	rs := retention.deny with input as req with data.nexus.config as fx.config with time.now_ns as fx.now_ns
}

days_ago(days) := time.format([fx.now_ns - (days * fx.day_ns), "UTC", "2006-01-02T15:04:05Z07:00"])

test_recent_record_is_readable if {
	reasons(read("acme", {"x-nexus-record-created": days_ago(29)})) == set()
}

test_tenant_policy_replaces_the_default if {
	# acme keeps chat history 30 days, the "*" policy 90
	reasons(read("acme", {"x-nexus-record-created": days_ago(31)})) == {[
		"nexus.retention.retention_expired", 410,
		`chat-history records of tenant "acme" are kept 30 days; this one is older`,
	]}
	reasons(read("umbrella", {"x-nexus-record-created": days_ago(31)})) == set()
}

test_default_policy_applies_without_a_tenant_policy if {
	reasons(read("umbrella", {"x-nexus-record-created": days_ago(91)})) == {[
		"nexus.retention.retention_expired", 410,
		`chat-history records of tenant "umbrella" are kept 90 days; this one is older`,
	]}
}

test_data_class_header_selects_the_policy if {
	reasons(read("acme", {"x-nexus-data-class": "voice", "x-nexus-record-created": days_ago(6)})) == set()
	old_voice := read("acme", {"x-nexus-data-class": "voice", "x-nexus-record-created": days_ago(8)})
	{r[0] | some r in reasons(old_voice)} == {"nexus.retention.retention_expired"}
}

test_legal_hold_keeps_old_records_readable if {
	reasons(read("globex", {"x-nexus-record-created": days_ago(400)})) == set()
}

test_expired_read_carries_retention_controls if {
	rs := retention.deny with input as read("acme", {"x-nexus-record-created": days_ago(31)})
		with data.nexus.config as fx.config
		with time.now_ns as fx.now_ns
	{r.controls | some r in rs} == {["GDPR:Art.5", "ISO27001:A.5.33", "ISO27001:A.8.10", "SOC2:C1.2"]}
}

test_unknown_data_class_is_400 if {
	reasons(read("acme", {"x-nexus-data-class": "biometrics", "x-nexus-record-created": days_ago(1)})) == {[
		"nexus.retention.data_class_unknown", 400,
		`no retention policy covers data class "biometrics"`,
	]}
}

test_missing_creation_time_is_400 if {
	reasons(read("acme", {})) == {[
		"nexus.retention.record_created_invalid", 400,
		"the x-nexus-record-created header must be an RFC 3339 time",
	]}
}

test_creation_time_must_be_rfc3339 if {
	every created in ["2026-11-01", "yesterday"] {
		rs := reasons(read("acme", {"x-nexus-record-created": created}))
		{r[0] | some r in rs} == {"nexus.retention.record_created_invalid"}
	}
	reasons(read("acme", {"x-nexus-record-created": "2026-11-20T09:30:00+01:00"})) == set()
}

test_deletion_without_legal_hold_is_allowed if {
	reasons(request_for("acme", "DELETE", "/v1/chats/c-1", {})) == set()
	reasons(request_for("acme", "DELETE", "/v1/subjects/u-1", {})) == set()
}

test_legal_hold_blocks_deletion_and_erasure if {
	every path in ["/v1/chats/c-1", "/v1/subjects/u-1"] {
		reasons(request_for("globex", "DELETE", path, {})) == {[
			"nexus.retention.legal_hold", 403,
			`tenant "globex" has a legal hold on chat-history`,
		]}
	}
}

acme_voice_held := json.patch(fx.config, [{
	"op": "add", "path": "/retention/acme/voice",
	"value": {"days": 7, "delete": "hard", "legal_hold": true},
}])

acme_delete_rules(headers) := {r.rule | some r in rs} if {
	rs := retention.deny with input as request_for("acme", "DELETE", "/v1/chats/c-1", headers)
		with data.nexus.config as acme_voice_held
}

test_legal_hold_on_one_class_leaves_deletes_of_other_classes_alone if {
	acme_delete_rules({}) == set()
	acme_delete_rules({"x-nexus-data-class": "chat-history"}) == set()
	acme_delete_rules({"x-nexus-data-class": "voice"}) == {"nexus.retention.legal_hold"}
}

test_legal_hold_on_any_class_blocks_erasure_of_a_subject if {
	rs := retention.deny with input as request_for("acme", "DELETE", "/v1/subjects/u-1", {})
		with data.nexus.config as acme_voice_held
	{r.message | some r in rs} == {`tenant "acme" has a legal hold on voice`}
}

test_legal_hold_carries_erasure_controls if {
	rs := retention.deny with input as request_for("globex", "DELETE", "/v1/subjects/u-1", {})
		with data.nexus.config as fx.config
	{r.controls | some r in rs} == {["GDPR:Art.17", "SOC2:P4.3", "ISO27001:A.5.33", "HIPAA:164.312(c)(1)"]}
}

test_default_legal_hold_applies_to_every_tenant_without_its_own_policy if {
	config := json.patch(fx.config, [{"op": "replace", "path": "/retention/*/voice/legal_hold", "value": true}])
	rs := retention.deny with input as request_for("acme", "DELETE", "/v1/chats/c-1", {"x-nexus-data-class": "voice"})
		with data.nexus.config as config
	{r.message | some r in rs} == {`tenant "acme" has a legal hold on voice`}
}

test_tenant_policy_lifts_a_default_legal_hold_for_its_class if {
	config := json.patch(fx.config, [{"op": "replace", "path": "/retention/*/chat-history/legal_hold", "value": true}])
	count(retention.deny) == 0 with input as request_for("acme", "DELETE", "/v1/chats/c-1", {})
		with data.nexus.config as config
}

test_reads_ignore_legal_hold_on_other_routes if {
	reasons(request_for("globex", "POST", "/v1/chat/completions", {})) == set()
}
