# METADATA
# title: Role-based access
# description: |
#   Each route needs one permission, granted per tenant and subject. The
#   compiler flattens roles and bindings into grants[tenant][subject], so a
#   request costs one lookup however many roles a subject holds.
package nexus.rbac

import data.nexus.identity
import data.nexus.reason
import data.nexus.request

route_permissions := {
	"chat.completions": "chat:completions",
	"chats.read": "chats:read",
	"chats.delete": "chats:delete",
	"subjects.erase": "subjects:erase",
}

# A tool call needs the permission of the tool it invokes.
default permission := ""

permission := route_permissions[request.route]

permission := data.nexus.config.tools[request.tool_id].permission if request.route == "tools.invoke"

# An unknown tool is the tools concern's 404, not a missing grant; a known
# tool without a permission is refused here rather than left open.
applies if route_permissions[request.route]

applies if {
	request.route == "tools.invoke"
	data.nexus.config.tools[request.tool_id]
}

default granted := false

# METADATA
# scope: rule
# title: Permission granted
# description: |
#   The subject holds the route's permission in the request's tenant.
#   Recorded in the decision log's rule_labels on every allowed request.
# labels:
#   controls:
#     - SOC2:CC6.1
#     - SOC2:CC6.3
#     - ISO27001:A.5.15
#     - ISO27001:A.8.3
#     - HIPAA:164.312(a)(1)
#     - HIPAA:164.308(a)(4)(ii)(B)
#     - PCI:7.3.1
#     - PCI:7.3.2
granted if data.nexus.config.grants[request.tenant][identity.subject][permission] == true

# METADATA
# title: Permission denied
# description: The subject holds no grant of the permission the route needs in this tenant.
# custom:
#   id: nexus.rbac.permission_denied
#   status: 403
# labels:
#   controls:
#     - SOC2:CC6.1
#     - SOC2:CC6.3
#     - ISO27001:A.5.15
#     - ISO27001:A.8.3
#     - HIPAA:164.312(a)(1)
#     - HIPAA:164.308(a)(4)(ii)(B)
#     - PCI:7.3.1
#     - PCI:7.3.2
#     - PCI:10.2.1.4
deny contains reason.build(rego.metadata.rule(), msg) if {
	applies
	not granted
	msg := sprintf("%s lacks permission %q in tenant %q", [identity.subject, permission, request.tenant])
}
