package nexus.identity_test

import data.nexus.identity
import data.nexus.test_fixtures as fx

chat_request(headers) := fx.http_request("POST", "/v1/chat/completions", headers)

jwt_headers(tenant, token) := {"authorization": fx.bearer(token), "x-nexus-tenant": tenant}

credential_of(headers) := c if {
	c := identity.credential with input as chat_request(headers)
		with data.nexus.config as fx.config
		with time.now_ns as fx.now_ns
}

reasons_of(headers) := rs if {
	rs := identity.deny with input as chat_request(headers)
		with data.nexus.config as fx.config
		with time.now_ns as fx.now_ns
}

only_reason(headers) := r if {
	rs := reasons_of(headers)
	count(rs) == 1
	some r in rs
}

alice_with(claims) := fx.sign(fx.keys.idp_rsa, object.union(fx.alice_claims, claims))

test_api_key_identifies_tenant_and_subject if {
	credential_of(fx.acme_headers) == {"method": "api_key", "tenant": "acme", "subject": "apikey:acme-prod-1"}
	count(reasons_of(fx.acme_headers)) == 0
}

test_bearer_scheme_is_case_insensitive if {
	headers := {"authorization": concat(" ", ["bearer", fx.acme_api_key]), "x-nexus-tenant": "acme"}
	credential_of(headers).subject == "apikey:acme-prod-1"
}

test_anonymous_caller_has_no_tenant_or_subject if {
	identity.tenant == "" with input as chat_request({"x-nexus-tenant": "acme"}) with data.nexus.config as fx.config
	identity.subject == "" with input as chat_request({"x-nexus-tenant": "acme"}) with data.nexus.config as fx.config
}

test_authenticated_only_with_a_credential if {
	identity.authenticated with input as chat_request(fx.acme_headers) with data.nexus.config as fx.config
	not identity.authenticated with input as chat_request({"x-nexus-tenant": "acme"}) with data.nexus.config as fx.config
}

test_missing_authorization_is_401 if {
	r := only_reason({"x-nexus-tenant": "acme"})
	r.rule == "nexus.identity.credential_missing"
	r.status == 401
	r.controls == [
		"SOC2:CC6.1",
		"ISO27001:A.5.17",
		"ISO27001:A.8.5",
		"HIPAA:164.312(d)",
		"HIPAA:164.308(a)(5)(ii)(C)",
		"PCI:8.3.1",
		"PCI:10.2.1.4",
	]
}

test_non_bearer_scheme_is_missing_credential if {
	basic := {"authorization": "Basic YWxpY2U6c2VjcmV0", "x-nexus-tenant": "acme"}
	only_reason(basic).rule == "nexus.identity.credential_missing"
	only_reason({"authorization": "Bearer   ", "x-nexus-tenant": "acme"}).rule == "nexus.identity.credential_missing"
}

test_unknown_api_key_is_401 if {
	r := only_reason(fx.api_key_headers("acme", "nx-not-a-key"))
	r.rule == "nexus.identity.credential_invalid"
	r.status == 401
	r.message == "the bearer token is not a known API key"
	credential_of(fx.api_key_headers("acme", "nx-not-a-key")) == {}
}

test_jwt_user_from_trusted_issuer if {
	credential_of(jwt_headers("acme", fx.alice_token)) == {
		"method": "jwt", "tenant": "acme",
		"subject": "user:alice@acme.example",
	}
	count(reasons_of(jwt_headers("acme", fx.alice_token))) == 0
}

test_jwt_service_kind if {
	token := alice_with({"sub": "batch", "nexus_kind": "service"})
	credential_of(jwt_headers("acme", token)).subject == "service:batch"
}

test_jwt_tenant_claim_is_per_issuer if {
	token := fx.sign(fx.keys.idp_ec, {
		"iss": fx.globex_issuer, "aud": "nexus-gateway", "sub": "carol",
		"org": "globex", "exp": fx.now_s + 60,
	})
	credential_of(jwt_headers("globex", token)) == {"method": "jwt", "tenant": "globex", "subject": "user:carol"}
}

test_jwt_unknown_kind_is_401 if {
	r := only_reason(jwt_headers("acme", alice_with({"nexus_kind": "admin"})))
	r.rule == "nexus.identity.credential_invalid"
	r.message == concat("", [
		`the JWT from "https://login.acme.example" needs a "nexus_tenant" claim naming a tenant `,
		"the issuer may speak for, a sub and a nexus_kind of user or service",
	])
}

test_issuer_cannot_speak_for_a_tenant_it_was_not_given if {
	token := alice_with({"nexus_tenant": "globex"})
	r := only_reason(jwt_headers("globex", token))
	r.rule == "nexus.identity.credential_invalid"
	credential_of(jwt_headers("globex", token)) == {}
}

test_jwt_without_tenant_claim_is_401 if {
	token := fx.sign(fx.keys.idp_rsa, object.remove(fx.alice_claims, ["nexus_tenant"]))
	only_reason(jwt_headers("acme", token)).rule == "nexus.identity.credential_invalid"
}

test_jwt_without_sub_is_401 if {
	token := fx.sign(fx.keys.idp_rsa, object.remove(fx.alice_claims, ["sub"]))
	only_reason(jwt_headers("acme", token)).rule == "nexus.identity.credential_invalid"
}

test_jwt_from_untrusted_issuer_is_401 if {
	r := only_reason(jwt_headers("acme", alice_with({"iss": "https://evil.example"})))
	r.rule == "nexus.identity.credential_invalid"
	r.message == "the bearer token is not a JWT from a trusted issuer"
}

test_undecodable_jwt_is_401 if {
	only_reason(jwt_headers("acme", "not.a.jwt")).message == "the bearer token is not a JWT from a trusted issuer"
}

verification_failure := concat("", [
	`the JWT from "https://login.acme.example" failed verification `,
	"of its signature, audience or lifetime",
])

test_expired_jwt_is_401 if {
	only_reason(jwt_headers("acme", alice_with({"exp": fx.now_s - 1}))).message == verification_failure
}

test_jwt_for_another_audience_is_401 if {
	only_reason(jwt_headers("acme", alice_with({"aud": "another-service"}))).message == verification_failure
}

test_jwt_signed_with_an_untrusted_key_is_401 if {
	forged := io.jwt.encode_sign({"alg": "ES256", "kid": "idp_rsa"}, fx.alice_claims, fx.keys.rogue_ec.private)
	only_reason(jwt_headers("acme", forged)).message == verification_failure
}

test_jwt_without_expiry_is_401 if {
	token := fx.sign(fx.keys.idp_rsa, object.remove(fx.alice_claims, ["exp"]))
	only_reason(jwt_headers("acme", token)).message == verification_failure
}

test_credential_of_another_tenant_is_403 if {
	r := only_reason(fx.api_key_headers("globex", fx.acme_api_key))
	r.rule == "nexus.identity.tenant_mismatch"
	r.status == 403
	r.message == `the credential was not issued for tenant "globex"`
	r.controls == [
		"SOC2:CC6.1",
		"SOC2:CC6.3",
		"ISO27001:A.5.15",
		"ISO27001:A.8.3",
		"HIPAA:164.312(a)(1)",
		"PCI:7.3.1",
		"PCI:10.2.1.4",
	]
}

test_jwt_of_another_tenant_is_403 if {
	only_reason(jwt_headers("globex", fx.alice_token)).rule == "nexus.identity.tenant_mismatch"
}

test_missing_tenant_header_is_left_to_the_request_stage if {
	count(reasons_of({"authorization": fx.bearer(fx.acme_api_key)})) == 0
}

# A decision log replaces the token by its fingerprint but keeps the
# plugin's hash, so a replayed decision names the same key.
test_api_key_is_identified_by_the_plugins_hash_after_masking if {
	masked := object.union(
		chat_request({"authorization": "Bearer sha256:0011223344556677", "x-nexus-tenant": "acme"}),
		{"nexus": {"credential_sha256": crypto.sha256(fx.acme_api_key)}},
	)
	c := identity.credential with input as masked with data.nexus.config as fx.config
	c == {"method": "api_key", "tenant": "acme", "subject": "apikey:acme-prod-1"}
}
