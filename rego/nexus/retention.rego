# METADATA
# title: Retention
# description: |
#   Records are kept per tenant and data class for a number of days, unless
#   under legal hold. A read past retention is refused. A legal hold is per
#   data class: a record of a held class is not deleted, and a data subject
#   is not erased while any class of the tenant is held (erasure reaches
#   every class of the subject's data).
#
#   A record's data class and creation time are facts the client cannot
#   choose: they come from a short-lived token the record's store signed
#   (x-nexus-record-token), verified against the store's JWKS compiled into
#   the bundle, for this tenant and this record id. Envoy strips any
#   header that would claim them.
package nexus.retention

import data.nexus.reason
import data.nexus.request

ns_per_day := ((24 * 60) * 60) * 1000000000

ns_per_s := 1000000000

record_routes := {"chats.read", "chats.delete"}

# Every deny rule below needs a record route or an erasure, so the entry
# point asks for this module's reasons on these routes only (authz_test
# proves the others get none).
routes := record_routes | {"subjects.erase"}

record_route if record_routes[request.route]

# The record id is the path's last segment: /v1/chats/{id}.
record_id := input.parsed_path[2] if record_route

record_token := request.headers["x-nexus-record-token"]

# Decoding without verification only tells us which store's keys to verify
# with; no claim is trusted until decode_verify accepts the token.
record_issuer := claims.iss if {
	# regal ignore:forbidden-function-call
	[_, claims, _] := io.jwt.decode(record_token)
	is_string(claims.iss)
}

record_signer := data.nexus.config.record_signers[record_issuer]

# The verified facts: the store's signature, audience and lifetime, a
# bounded lifetime (exp - iat), the tenant and the record the request names.
record := claims if {
	[valid, _, claims] := io.jwt.decode_verify(record_token, {
		"cert": record_signer.jwks,
		"iss": record_issuer,
		"aud": record_signer.audience,
		"time": time.now_ns(),
	})
	valid
	is_number(claims.exp)
	is_number(claims.iat)
	claims.exp - claims.iat <= record_signer.max_ttl_s
	record_signer.tenants[request.tenant] == true
	claims.nexus_tenant == request.tenant
	claims.sub == record_id
	is_string(claims.data_class)
	is_number(claims.created_at)
}

data_class := record.data_class

# A tenant's own policy for a class replaces the "*" policy for that class.
policy := tenant_policy if {
	tenant_policy := data.nexus.config.retention[request.tenant][data_class]
} else := data.nexus.config.retention["*"][data_class]

created_ns := record.created_at * ns_per_s

held_classes contains class if {
	some class, class_policy in data.nexus.config.retention[request.tenant]
	class_policy.legal_hold == true
}

held_classes contains class if {
	some class, class_policy in data.nexus.config.retention["*"]
	not data.nexus.config.retention[request.tenant][class]
	class_policy.legal_hold == true
}

# The classes a request would destroy: the record's own class for a delete,
# every held class for an erasure.
blocking_holds contains data_class if {
	request.route == "chats.delete"
	record
	held_classes[data_class]
}

blocking_holds contains class if {
	request.route == "subjects.erase"
	some class in held_classes
}

# A message quotes an issuer only once the config knows it: every claim of
# an unverified token is attacker-controlled text.
record_token_problem := "no x-nexus-record-token: the record's store signs its facts" if {
	not record_token
} else := "the x-nexus-record-token is not from a trusted record store" if {
	not record_signer
} else := sprintf(
	concat(" ", [
		"the record token from %q failed verification (signature, audience, lifetime",
		"at most %v s, tenant %q, record %q, data_class, created_at)",
	]),
	[record_issuer, record_signer.max_ttl_s, request.tenant, record_id],
)

# METADATA
# title: Unknown data class
# description: Neither the tenant nor the "*" retention policy covers the data class read.
# custom:
#   id: nexus.retention.data_class_unknown
#   status: 400
# labels:
#   controls:
#     - GDPR:Art.5
#     - ISO27001:A.5.33
#     - SOC2:C1.2
deny contains reason.build(rego.metadata.rule(), msg) if {
	request.route == "chats.read"
	record
	not policy
	msg := sprintf("no retention policy covers data class %q", [data_class])
}

# METADATA
# title: Record facts unverified
# description: |
#   A read or delete of a record carries a short-lived token from the
#   record's store (x-nexus-record-token) stating the record's tenant, id,
#   data class and creation time; without a valid one the request is refused.
# custom:
#   id: nexus.retention.record_token_invalid
#   status: 400
# labels:
#   controls:
#     - GDPR:Art.5
#     - ISO27001:A.5.33
#     - SOC2:C1.2
deny contains reason.build(rego.metadata.rule(), record_token_problem) if {
	record_route
	not record
}

# METADATA
# title: Retention period over
# description: |
#   The record is older than its retention period and not under legal
#   hold: it is due for deletion and must not be served.
# custom:
#   id: nexus.retention.retention_expired
#   status: 410
# labels:
#   controls:
#     - GDPR:Art.5
#     - ISO27001:A.5.33
#     - ISO27001:A.8.10
#     - SOC2:C1.2
deny contains reason.build(rego.metadata.rule(), msg) if {
	request.route == "chats.read"
	not policy.legal_hold == true
	time.now_ns() - created_ns > policy.days * ns_per_day
	msg := sprintf(
		"%s records of tenant %q are kept %v days; this one is older",
		[data_class, request.tenant, policy.days],
	)
}

# METADATA
# title: Legal hold
# description: |
#   A record of a data class under legal hold is not deleted; while any data
#   class of the tenant is held, its data subjects are not erased.
# custom:
#   id: nexus.retention.legal_hold
#   status: 403
# labels:
#   controls:
#     - GDPR:Art.17
#     - SOC2:P4.3
#     - ISO27001:A.5.33
#     - HIPAA:164.312(c)(1)
deny contains reason.build(rego.metadata.rule(), msg) if {
	count(blocking_holds) > 0
	msg := sprintf("tenant %q has a legal hold on %s", [request.tenant, concat(", ", blocking_holds)])
}
