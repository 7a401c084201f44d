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

# A record c-1 of ``tenant`` as its store states it.
facts(tenant, data_class, days) := fx.record_headers(tenant, "c-1", data_class, days)

chat_of(tenant, days) := facts(tenant, "chat-history", days)

test_recent_record_is_readable if {
	reasons(read("acme", chat_of("acme", 29))) == set()
}

test_tenant_policy_replaces_the_default if {
	# acme keeps chat history 30 days, the "*" policy 90
	reasons(read("acme", chat_of("acme", 31))) == {[
		"nexus.retention.retention_expired", 410,
		`chat-history records of tenant "acme" are kept 30 days; this one is older`,
	]}
	reasons(read("umbrella", chat_of("umbrella", 31))) == set()
}

test_default_policy_applies_without_a_tenant_policy if {
	reasons(read("umbrella", chat_of("umbrella", 91))) == {[
		"nexus.retention.retention_expired", 410,
		`chat-history records of tenant "umbrella" are kept 90 days; this one is older`,
	]}
}

test_signed_data_class_selects_the_policy if {
	reasons(read("acme", facts("acme", "voice", 6))) == set()
	old_voice := read("acme", facts("acme", "voice", 8))
	{r[0] | some r in reasons(old_voice)} == {"nexus.retention.retention_expired"}
}

test_legal_hold_keeps_old_records_readable if {
	reasons(read("globex", chat_of("globex", 400))) == set()
}

test_expired_read_carries_retention_controls if {
	rs := retention.deny with input as read("acme", chat_of("acme", 31))
		with data.nexus.config as fx.config
		with time.now_ns as fx.now_ns
	{r.controls | some r in rs} == {["GDPR:Art.5", "ISO27001:A.5.33", "ISO27001:A.8.10", "SOC2:C1.2"]}
}

test_unknown_data_class_is_400 if {
	reasons(read("acme", facts("acme", "biometrics", 1))) == {[
		"nexus.retention.data_class_unknown", 400,
		`no retention policy covers data class "biometrics"`,
	]}
}

test_missing_record_token_is_400 if {
	reasons(read("acme", {})) == {[
		"nexus.retention.record_token_invalid", 400,
		"no x-nexus-record-token: the record's store signs its facts",
	]}
}

test_client_cannot_claim_a_fresh_record_by_header if {
	# a 100-day-old acme chat (30-day limit); the client adds the old headers
	old := object.union(chat_of("acme", 100), {
		"x-nexus-record-created": time.format([fx.now_ns, "UTC", "2006-01-02T15:04:05Z07:00"]),
		"x-nexus-data-class": "voice",
	})
	{r[0] | some r in reasons(read("acme", old))} == {"nexus.retention.retention_expired"}
	by_header := read("acme", {"x-nexus-record-created": "2026-11-20T09:30:00Z"})
	{r[0] | some r in reasons(by_header)} == {"nexus.retention.record_token_invalid"}
}

record_rules(tenant, path, claims, signing_key) := {r.rule | some r in rs} if {
	token := fx.sign(signing_key, object.union(fx.record_claims(tenant, "c-1", "chat-history", fx.now_s), claims))
	rs := retention.deny with input as request_for(tenant, "GET", path, {"x-nexus-record-token": token})
		with data.nexus.config as fx.config
		with time.now_ns as fx.now_ns
}

test_record_token_must_verify_and_match_the_request if {
	record_rules("acme", "/v1/chats/c-1", {}, fx.keys.record_ec) == set()
	ok := {"nexus.retention.record_token_invalid"}

	# signed by someone else, for another tenant, another record, too long-lived, expired
	record_rules("acme", "/v1/chats/c-1", {}, fx.keys.idp_ec) == ok
	record_rules("acme", "/v1/chats/c-1", {"nexus_tenant": "globex"}, fx.keys.record_ec) == ok
	record_rules("acme", "/v1/chats/c-2", {}, fx.keys.record_ec) == ok
	record_rules("acme", "/v1/chats/c-1", {"exp": fx.now_s + 3600}, fx.keys.record_ec) == ok
	record_rules("acme", "/v1/chats/c-1", {"iat": fx.now_s - 120, "exp": fx.now_s - 60}, fx.keys.record_ec) == ok
	record_rules("acme", "/v1/chats/c-1", {"aud": "elsewhere"}, fx.keys.record_ec) == ok
	record_rules("acme", "/v1/chats/c-1", {"created_at": "2026-11-01T00:00:00Z"}, fx.keys.record_ec) == ok

	# a store speaks only for its tenants (stark is not among them)
	record_rules("stark", "/v1/chats/c-1", {}, fx.keys.record_ec) == ok
}

test_client_cannot_claim_another_data_class if {
	# globex holds chat-history: a delete stating another class by header is still held
	headers := object.union(chat_of("globex", 1), {"x-nexus-data-class": "voice"})
	rs := reasons(request_for("globex", "DELETE", "/v1/chats/c-1", headers))
	{r[0] | some r in rs} == {"nexus.retention.legal_hold"}
}

test_deletion_without_legal_hold_is_allowed if {
	reasons(request_for("acme", "DELETE", "/v1/chats/c-1", chat_of("acme", 1))) == set()
	reasons(request_for("acme", "DELETE", "/v1/subjects/u-1", {})) == set()
}

test_legal_hold_blocks_deletion_and_erasure if {
	every path in ["/v1/chats/c-1", "/v1/subjects/u-1"] {
		reasons(request_for("globex", "DELETE", path, chat_of("globex", 1))) == {[
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
		with time.now_ns as fx.now_ns
}

test_legal_hold_on_one_class_leaves_deletes_of_other_classes_alone if {
	acme_delete_rules(chat_of("acme", 1)) == set()
	acme_delete_rules(facts("acme", "voice", 1)) == {"nexus.retention.legal_hold"}
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
	rs := retention.deny with input as request_for("acme", "DELETE", "/v1/chats/c-1", facts("acme", "voice", 1))
		with data.nexus.config as config
		with time.now_ns as fx.now_ns
	{r.message | some r in rs} == {`tenant "acme" has a legal hold on voice`}
}

test_tenant_policy_lifts_a_default_legal_hold_for_its_class if {
	config := json.patch(fx.config, [{"op": "replace", "path": "/retention/*/chat-history/legal_hold", "value": true}])
	count(retention.deny) == 0 with input as request_for("acme", "DELETE", "/v1/chats/c-1", chat_of("acme", 1))
		with data.nexus.config as config
		with time.now_ns as fx.now_ns
}

test_reads_ignore_legal_hold_on_other_routes if {
	reasons(request_for("globex", "POST", "/v1/chat/completions", {})) == set()
}
