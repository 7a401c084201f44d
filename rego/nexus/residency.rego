# METADATA
# title: Residency
# description: |
#   A tenant bound to a jurisdiction is served only by enforcers in a region
#   of that jurisdiction. The region is the enforcer's own "region" label.
package nexus.residency

import data.nexus.reason
import data.nexus.request

# A null jurisdiction means the tenant may be served from any region.
jurisdiction := bound if {
	bound := data.nexus.config.tenants[request.tenant].jurisdiction
	is_string(bound)
}

# Read only for a bound tenant: most tenants never pay for opa.runtime().
region := opa.runtime().config.labels.region if jurisdiction

region_jurisdiction := data.nexus.config.regions[region].jurisdiction

region_problem := "this enforcer has no region label" if {
	not region
} else := sprintf("this enforcer's region %q is not in the region list", [region])

# METADATA
# title: Enforcer region unknown
# description: |
#   The tenant is bound to a jurisdiction and this enforcer has no region
#   label, or one the compiled region list does not know, so residency
#   cannot be shown.
# custom:
#   id: nexus.residency.region_unknown
#   status: 403
# labels:
#   controls:
#     - GDPR:Art.44
#     - ISO27001:A.5.34
#     - SOC2:C1.1
deny contains reason.build(rego.metadata.rule(), msg) if {
	jurisdiction
	not region_jurisdiction
	msg := sprintf("tenant %q is bound to %q and %s", [request.tenant, jurisdiction, region_problem])
}

# METADATA
# title: Region outside the tenant's jurisdiction
# description: The tenant's data may not be processed in this enforcer's region.
# custom:
#   id: nexus.residency.jurisdiction_mismatch
#   status: 403
# labels:
#   controls:
#     - GDPR:Art.44
#     - ISO27001:A.5.34
#     - SOC2:C1.1
deny contains reason.build(rego.metadata.rule(), msg) if {
	region_jurisdiction != jurisdiction
	msg := sprintf(
		"tenant %q is bound to %q; region %q is in %q",
		[request.tenant, jurisdiction, region, region_jurisdiction],
	)
}
