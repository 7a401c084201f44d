# METADATA
# title: Tenants
# description: Only known, active tenants are served.
package nexus.tenants

import data.nexus.reason
import data.nexus.request

# The tenant the request names is known and active, so neither rule below
# refuses it. The gateway decision reads this one lookup instead of
# evaluating both rules on every request it serves (tenants_test proves
# that served leaves deny empty).
served if data.nexus.config.tenants[request.tenant].status == "active"

# METADATA
# title: Unknown tenant
# description: The tenant named in x-nexus-tenant is not in the compiled tenant list.
# custom:
#   id: nexus.tenants.unknown_tenant
#   status: 403
# labels:
#   controls:
#     - SOC2:CC6.1
#     - ISO27001:A.5.15
#     - HIPAA:164.312(a)(1)
#     - PCI:7.3.3
deny contains reason.build(rego.metadata.rule(), msg) if {
	request.tenant != ""
	not data.nexus.config.tenants[request.tenant]
	msg := sprintf("tenant %q is not known", [request.tenant])
}

# METADATA
# title: Tenant suspended
# description: |
#   A tenant whose status is not "active" keeps its data but loses access.
#   Any status other than "active", including none, is refused, so a new
#   status value in the compiler cannot open access by accident.
# custom:
#   id: nexus.tenants.tenant_suspended
#   status: 403
# labels:
#   controls:
#     - SOC2:CC6.1
#     - SOC2:CC6.2
#     - ISO27001:A.5.18
#     - HIPAA:164.308(a)(4)(ii)(C)
#     - PCI:7.3.1
deny contains reason.build(rego.metadata.rule(), msg) if {
	tenant := data.nexus.config.tenants[request.tenant]
	status := object.get(tenant, "status", "")
	status != "active"
	msg := sprintf("tenant %q is %s", [request.tenant, status])
}
