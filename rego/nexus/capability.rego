# METADATA
# title: Capability
# description: |
#   Names what a request is for, in words an operator reads on a
#   dashboard: its route, its tool and the agent capability (SLOs spec,
#   data.nexus.config.capabilities) it belongs to. The decision carries
#   them as labels; the ext_authz plugin labels its decision metrics with
#   them, and the SLO rules count availability and latency per capability.
#   Every value comes from the bundle, never from the request, so the
#   labels stay a bounded set: an unknown tool is "unknown", an unknown
#   route "none".
# labels:
#   controls:
#     - SOC2:A1.1
#     - SOC2:CC7.2
package nexus.capability

import data.nexus.request

default route := "none"

route := request.route if request.route != ""

default tool := "none"

tool := request.tool_id if {
	request.route == "tools.invoke"
	data.nexus.config.tools[request.tool_id]
} else := "unknown" if {
	request.route == "tools.invoke"
}

# A tool call belongs to the capability naming its tool, else to the one
# naming its route; a bundle without SLOs names none.
default name := "none"

name := data.nexus.config.capabilities.tools[tool] if {
	request.route == "tools.invoke"
} else := data.nexus.config.capabilities.routes[request.route]

# Off tool calls the labels need no tool lookup, so the common case is one
# rule with one lookup; capability_test proves both branches give what
# route, tool and name say.
labels := {"route": request.route, "tool": "none", "capability": object.get(
	data.nexus.config,
	["capabilities", "routes", request.route],
	"none",
)} if {
	request.route != ""
	request.route != "tools.invoke"
} else := {"route": route, "tool": tool, "capability": name}
