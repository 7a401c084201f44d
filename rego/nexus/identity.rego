# METADATA
# title: Identity
# description: |
#   Establishes who is calling from the bearer credential: an API key
#   (looked up by its SHA-256, so bundles never hold a key) or a JWT from a
#   trusted issuer. Stage 2 of the decision.
package nexus.identity

import data.nexus.reason
import data.nexus.request

subject_kinds := {"user", "service"}

# The scheme name is case-insensitive (RFC 9110, section 11.1).
bearer_token := token if {
	authorization := request.headers.authorization
	lower(substring(authorization, 0, 7)) == "bearer "
	token := trim_space(substring(authorization, 7, -1))
	token != ""
}

# A JWS compact serialisation has exactly three parts; any other token is
# treated as an API key.
is_jwt if count(split(bearer_token, ".")) == 3

# The plugin hashes the credential into input.nexus.credential_sha256, which
# the decision log keeps while masking replaces the token itself: replay
# then identifies an API key exactly as the live decision did.
key_hash := input.nexus.credential_sha256 if is_string(input.nexus.credential_sha256)

else := crypto.sha256(bearer_token)

api_key := data.nexus.config.api_keys[key_hash] if not is_jwt

# Decoding without verification only tells us which issuer's keys to
# verify with; no claim is trusted until decode_verify accepts the token.
jwt_issuer := claims.iss if {
	is_jwt

	# regal ignore:forbidden-function-call
	[_, claims, _] := io.jwt.decode(bearer_token)
	is_string(claims.iss)
}

issuer := data.nexus.config.issuers[jwt_issuer]

# A token without "exp" would never expire, so one is required.
jwt_claims := claims if {
	[valid, _, claims] := io.jwt.decode_verify(bearer_token, {
		"cert": issuer.jwks,
		"iss": jwt_issuer,
		"aud": issuer.audience,
		"time": time.now_ns(),
	})
	valid
	is_number(claims.exp)
}

default credential := {}

# An API key and a JWT exclude each other (is_jwt), so the definitions are
# one else-chain: an API-key request never evaluates the JWT branch.
credential := {"method": "api_key", "tenant": api_key.tenant, "subject": api_key.subject} if {
	api_key
} else := {"method": "jwt", "tenant": claimed_tenant, "subject": sprintf("%s:%s", [kind, jwt_claims.sub])} if {
	claimed_tenant := jwt_claims[issuer.tenant_claim]
	is_string(claimed_tenant)
	claimed_tenant != ""

	# An identity provider speaks only for the tenants it was configured for.
	issuer.tenants[claimed_tenant] == true
	is_string(jwt_claims.sub)
	jwt_claims.sub != ""
	kind := object.get(jwt_claims, "nexus_kind", "user")
	kind in subject_kinds
}

default tenant := ""

tenant := credential.tenant

# The product feature the caller's spend is booked to: bound to the API key
# in the RBAC spec, or a nexus_feature claim of a verified JWT. Never a
# header: a client choosing its feature could dodge a per-feature cap.
default feature := ""

feature := api_key.feature if {
	credential.method == "api_key"
	is_string(api_key.feature)
} else := jwt_claims.nexus_feature if {
	credential.method == "jwt"
	is_string(jwt_claims.nexus_feature)
}

default subject := ""

subject := credential.subject

default authenticated := false

# METADATA
# scope: rule
# title: Caller authenticated
# description: |
#   The bearer credential is a known API key or a JWT verified against its
#   issuer's keys, audience and lifetime. Evaluated on every request that
#   reaches stage 2, so allowed decisions carry this evidence.
# labels:
#   controls:
#     - SOC2:CC6.1
#     - ISO27001:A.5.17
#     - ISO27001:A.8.5
#     - HIPAA:164.312(d)
#     - HIPAA:164.312(a)(2)(i)
#     - PCI:8.2.1
#     - PCI:8.3.1
authenticated if {
	credential.tenant != ""
	credential.subject != ""
}

# A message quotes an issuer only once the config knows it: every claim of
# an untrusted token is attacker-controlled text.
invalid_message := "the bearer token is not a known API key" if {
	not is_jwt
} else := "the bearer token is not a JWT from a trusted issuer" if {
	not issuer
} else := sprintf("the JWT from %q failed verification of its signature, audience or lifetime", [jwt_issuer]) if {
	not jwt_claims
} else := sprintf(
	"the JWT from %q needs a %q claim naming a tenant the issuer may speak for, a sub and a nexus_kind of user or service",
	[jwt_issuer, object.get(issuer, "tenant_claim", "")],
)

# METADATA
# title: Credential missing
# description: Every gateway request carries a bearer credential in the authorization header.
# custom:
#   id: nexus.identity.credential_missing
#   status: 401
# labels:
#   controls:
#     - SOC2:CC6.1
#     - ISO27001:A.5.17
#     - ISO27001:A.8.5
#     - HIPAA:164.312(d)
#     - HIPAA:164.308(a)(5)(ii)(C)
#     - PCI:8.3.1
#     - PCI:10.2.1.4
deny contains reason.build(rego.metadata.rule(), "an Authorization: Bearer credential is required") if {
	not bearer_token
}

# METADATA
# title: Credential invalid
# description: |
#   The bearer token is neither a known API key nor a JWT that verifies
#   against a trusted issuer's keys, audience and lifetime.
# custom:
#   id: nexus.identity.credential_invalid
#   status: 401
# labels:
#   controls:
#     - SOC2:CC6.1
#     - ISO27001:A.5.17
#     - ISO27001:A.8.5
#     - HIPAA:164.312(d)
#     - HIPAA:164.308(a)(5)(ii)(C)
#     - PCI:8.3.1
#     - PCI:10.2.1.4
deny contains reason.build(rego.metadata.rule(), invalid_message) if {
	bearer_token
	not authenticated
}

# METADATA
# title: Credential of another tenant
# description: |
#   A credential acts only inside the tenant it was issued for; naming
#   another tenant in x-nexus-tenant is refused.
# custom:
#   id: nexus.identity.tenant_mismatch
#   status: 403
# labels:
#   controls:
#     - SOC2:CC6.1
#     - SOC2:CC6.3
#     - ISO27001:A.5.15
#     - ISO27001:A.8.3
#     - HIPAA:164.312(a)(1)
#     - PCI:7.3.1
#     - PCI:10.2.1.4
deny contains reason.build(rego.metadata.rule(), msg) if {
	authenticated
	request.tenant != ""
	tenant != request.tenant
	msg := sprintf("the credential was not issued for tenant %q", [request.tenant])
}
