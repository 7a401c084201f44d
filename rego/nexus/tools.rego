# METADATA
# title: Tools
# description: |
#   A tool call must name a catalogued tool, carry arguments that match the
#   tool's JSON Schema and, for a tool that needs approval, an unused,
#   short-lived control-plane approval token bound to this tenant, tool,
#   argument digest and caller.
package nexus.tools

import data.nexus.identity
import data.nexus.reason
import data.nexus.request

# Every deny rule below needs a tool call, so the entry point asks for
# this module's reasons on these routes only (authz_test proves the others
# get none).
routes := {"tools.invoke"}

tool := data.nexus.config.tools[request.tool_id] if request.route == "tools.invoke"

# A cut-short body can still parse while missing what Envoy never
# forwarded, so its arguments are not trusted.
arguments := input.parsed_body.arguments if {
	tool
	not input.truncated_body
}

schema_match := json.match_schema(arguments, tool.schema)

default arguments_valid := false

arguments_valid if schema_match[0] == true

default schema_errors := "the tool has no usable schema"

schema_errors := concat("; ", sort([e.error | some e in schema_match[1]])) if {
	count(schema_match[1]) > 0
}

approval_token := request.headers["x-nexus-approval"] if tool.approval_required == true

# Pinned to ES256 so that a token signed with another algorithm is refused
# even if the key set were ever to hold a key that accepts it.
approval_claims := claims if {
	approval := data.nexus.config.approval
	[valid, _, claims] := io.jwt.decode_verify(approval_token, {
		"cert": approval.jwks,
		"alg": "ES256",
		"iss": approval.issuer,
		"aud": approval.audience,
		"time": time.now_ns(),
	})
	valid
}

# The approver must hash the very same bytes: json.marshal sorts object
# keys, writes no whitespace, keeps each number as the client wrote it and
# escapes <, > and & the way Go does (\u003c, \u003e, \u0026).
arguments_sha256 := crypto.sha256(json.marshal(arguments))

# An approval is for one call: it names its issue time, expiry, a unique id
# (jti, at most 128 characters) and the one caller it is for.
approval_well_formed if {
	is_number(approval_claims.iat)
	is_number(approval_claims.exp)
	is_string(approval_claims.jti)
	count(approval_claims.jti) > 0
	count(approval_claims.jti) <= 128
	is_string(approval_claims.subject)
	approval_claims.subject != ""
}

# The longest an approval may live for this tool's risk level (the policy's
# tools spec, approvalTtlSeconds). No cap configured for the level: no approval.
approval_max_ttl_s := data.nexus.config.approval.max_ttl_s[tool.risk]

approval_ttl_s := approval_claims.exp - approval_claims.iat

# Clock skew tolerated on iat: an approval "issued" in the future would
# otherwise live exp - now, beyond the cap.
approval_clock_skew_s := 60

approval_lifetime_ok if {
	approval_ttl_s > 0
	approval_ttl_s <= approval_max_ttl_s
	approval_claims.iat * 1000000000 <= time.now_ns() + (approval_clock_skew_s * 1000000000)
}

# Used approvals come from the state bundle (data.nexus_state.approvals.used,
# jti -> exp), which the control plane republishes when the gateway reports a
# use. An enforcer that has no such state cannot tell a replay from a first
# use, so it honours no approval at all (fail closed).
approval_use_known if is_object(data.nexus_state.approvals.used)

approval_used if data.nexus_state.approvals.used[approval_claims.jti]

default approval_verified := false

# METADATA
# scope: rule
# title: Tool call approved
# description: |
#   A verified approval token covers this tenant, tool, argument digest and
#   caller, lives no longer than the cap for the tool's risk level, and its
#   jti has not been used. Recorded in the decision log's rule_labels on
#   every approved call.
# labels:
#   controls:
#     - SOC2:CC6.3
#     - ISO27001:A.8.2
#     - EUAIACT:Art.14
#     - EUAIACT:Art.26
#     - HIPAA:164.312(b)
#     - PCI:7.2.3
#     - ISO42001:A.9.2
approval_verified if {
	approval_well_formed
	approval_lifetime_ok
	approval_claims.tenant == request.tenant
	approval_claims.tool == request.tool_id
	approval_claims.args_sha256 == arguments_sha256
	approval_claims.subject == identity.subject
	approval_use_known
	not approval_used
}

default approval_problem := "it was already used"

approval_problem := "it failed ES256 verification of its signature, issuer, audience or expiry" if {
	not approval_claims
} else := "it lacks iat, exp, jti (1-128 characters) or subject" if {
	not approval_well_formed
} else := sprintf("no approval lifetime is configured for %s risk tools", [object.get(tool, "risk", "unrated")]) if {
	not approval_max_ttl_s
} else := sprintf(
	"it lives %v s (exp - iat), more than the %v s allowed for %s risk tools, or was issued in the future",
	[approval_ttl_s, approval_max_ttl_s, tool.risk],
) if {
	not approval_lifetime_ok
} else := "it was issued for another tenant" if {
	not approval_claims.tenant == request.tenant
} else := "it was issued for another tool" if {
	not approval_claims.tool == request.tool_id
} else := "it covers other arguments" if {
	not approval_claims.args_sha256 == arguments_sha256
} else := "it was issued to another subject" if {
	not approval_claims.subject == identity.subject
} else := "this enforcer has not loaded which approvals are used (state bundle missing)" if {
	not approval_use_known
}

# METADATA
# title: Unknown tool
# description: The path names no tool in the compiled tool catalog.
# custom:
#   id: nexus.tools.tool_unknown
#   status: 404
# labels:
#   controls:
#     - SOC2:CC6.3
#     - ISO27001:A.8.2
#     - ISO42001:A.9.4
deny contains reason.build(rego.metadata.rule(), msg) if {
	request.route == "tools.invoke"
	not tool
	msg := sprintf("tool %q is not known", [request.tool_id])
}

# METADATA
# title: Tool header mismatch
# description: When x-nexus-tool is given it names the same tool as the path.
# custom:
#   id: nexus.tools.tool_header_mismatch
#   status: 400
# labels:
#   controls:
#     - SOC2:PI1.2
#     - ISO27001:A.8.26
#     - ISO42001:A.9.4
deny contains reason.build(rego.metadata.rule(), msg) if {
	request.route == "tools.invoke"
	named := request.headers["x-nexus-tool"]
	named != request.tool_id
	msg := sprintf("x-nexus-tool %q does not match the tool %q in the path", [named, request.tool_id])
}

# METADATA
# title: Tool arguments missing
# description: A tool call carries its arguments as a complete JSON body {"arguments" ...}.
# custom:
#   id: nexus.tools.arguments_missing
#   status: 400
# labels:
#   controls:
#     - SOC2:PI1.2
#     - ISO27001:A.8.26
#     - ISO42001:A.9.4
deny contains reason.build(rego.metadata.rule(), msg) if {
	tool
	not arguments
	msg := sprintf("the call to tool %q needs a complete JSON body with \"arguments\"", [request.tool_id])
}

# METADATA
# title: Tool arguments invalid
# description: The arguments do not match the tool's JSON Schema.
# custom:
#   id: nexus.tools.arguments_invalid
#   status: 400
# labels:
#   controls:
#     - SOC2:PI1.2
#     - ISO27001:A.8.26
#     - ISO42001:A.9.4
deny contains reason.build(rego.metadata.rule(), msg) if {
	arguments
	not arguments_valid
	msg := sprintf("the arguments of tool %q do not match its schema: %s", [request.tool_id, schema_errors])
}

# METADATA
# title: Approval required
# description: The tool needs a human approval and the call carries no x-nexus-approval token.
# custom:
#   id: nexus.tools.approval_required
#   status: 403
# labels:
#   controls:
#     - SOC2:CC6.3
#     - ISO27001:A.8.2
#     - EUAIACT:Art.14
#     - EUAIACT:Art.26
#     - HIPAA:164.312(b)
#     - PCI:7.2.3
#     - ISO42001:A.9.2
deny contains reason.build(rego.metadata.rule(), msg) if {
	tool.approval_required == true
	not approval_token
	msg := sprintf(
		"tool %q (risk %s) needs an approval token in x-nexus-approval",
		[request.tool_id, object.get(tool, "risk", "unrated")],
	)
}

# METADATA
# title: Approval invalid
# description: |
#   The x-nexus-approval token is not a valid, unused control-plane approval
#   for this tenant, tool, argument digest and caller, within the lifetime
#   allowed for the tool's risk level.
# custom:
#   id: nexus.tools.approval_invalid
#   status: 403
# labels:
#   controls:
#     - SOC2:CC6.3
#     - ISO27001:A.8.2
#     - EUAIACT:Art.14
#     - EUAIACT:Art.26
#     - HIPAA:164.312(b)
#     - PCI:7.2.3
#     - ISO42001:A.9.2
deny contains reason.build(rego.metadata.rule(), msg) if {
	approval_token
	not approval_verified
	msg := sprintf("the approval for tool %q is not valid: %s", [request.tool_id, approval_problem])
}
