# METADATA
# title: Rate limits
# description: |
#   Names, for an allowed request, the token bucket of every rate limit
#   that applies to it (data.nexus.config.rate_limits), as the decision's
#   dynamic metadata. Envoy enforces them: its local rate limit filter the
#   per-enforcer (scope region) buckets, the envoyproxy/ratelimit service
#   the shared ones. A bucket is named from the credential's tenant or
#   subject, never from a client's header, so a client cannot choose it.
# labels:
#   controls:
#     - SOC2:A1.1
#     - SOC2:CC6.1
#     - ISO27001:A.8.6
package nexus.ratelimit

import data.nexus.identity
import data.nexus.request

default limits := {}

limits := data.nexus.config.rate_limits

# An empty selector selects every request.
selects(selector, _) if count(selector) == 0

selects(selector, value) if selector[value] == true

plan := data.nexus.config.tenants[identity.tenant].plan

default tool := ""

tool := request.tool_id if request.route == "tools.invoke"

# Every limit whose selectors all select this request; a tools selector
# selects only tool calls.
applicable contains id if {
	some id, limit in limits
	selects(limit.tenants, identity.tenant)
	selects(limit.plans, plan)
	selects(limit.routes, request.route)
	selects(limit.tools, tool)
}

# limit id -> the bucket this request counts against: the credential's
# tenant, or the credential itself.
buckets[id] := identity.tenant if {
	identity.authenticated
	some id in applicable
	limits[id].key == "tenant"
}

buckets[id] := identity.subject if {
	identity.authenticated
	some id in applicable
	limits[id].key == "credential"
}
