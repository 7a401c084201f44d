# METADATA
# title: Retention
# description: |
#   Records are kept per tenant and data class for a number of days, unless
#   under legal hold. A read past retention is refused. A legal hold is per
#   data class: a record of a held class is not deleted, and a data subject
#   is not erased while any class of the tenant is held (erasure reaches
#   every class of the subject's data).
package nexus.retention

import data.nexus.reason
import data.nexus.request

ns_per_day := ((24 * 60) * 60) * 1000000000

default data_class := "chat-history"

data_class := request.headers["x-nexus-data-class"]

# A tenant's own policy for a class replaces the "*" policy for that class.
policy := tenant_policy if {
	tenant_policy := data.nexus.config.retention[request.tenant][data_class]
} else := data.nexus.config.retention["*"][data_class]

created_ns := time.parse_rfc3339_ns(request.headers["x-nexus-record-created"])

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
	held_classes[data_class]
}

blocking_holds contains class if {
	request.route == "subjects.erase"
	some class in held_classes
}

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
	not policy
	msg := sprintf("no retention policy covers data class %q", [data_class])
}

# METADATA
# title: Record creation time missing
# description: A read names the record's creation time in x-nexus-record-created, as RFC 3339.
# custom:
#   id: nexus.retention.record_created_invalid
#   status: 400
# labels:
#   controls:
#     - GDPR:Art.5
#     - ISO27001:A.5.33
#     - SOC2:C1.2
deny contains reason.build(rego.metadata.rule(), msg) if {
	request.route == "chats.read"
	not created_ns
	msg := "the x-nexus-record-created header must be an RFC 3339 time"
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
