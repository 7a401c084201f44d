# METADATA
# title: Tools
# description: |
#   A tool call must name a catalogued tool, carry arguments that match the
#   tool's JSON Schema and, for a tool that needs approval, a control-plane
#   approval token bound to this tenant, tool, argument digest and caller.
package nexus.tools

import data.nexus.identity
import data.nexus.reason
import data.nexus.request

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
# even if the key set were ever to hold a key that accepts it; "exp" is
# required because an approval is meant to be short-lived.
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
	is_number(claims.exp)
}

# The approver must hash the very same bytes: json.marshal sorts object
# keys, writes no whitespace, keeps each number as the client wrote it and
# escapes <, > and & the way Go does (\u003c, \u003e, \u0026).
arguments_sha256 := crypto.sha256(json.marshal(arguments))

# An approval without a subject may be used by anyone in the tenant who
# holds the tool's permission.
approval_subject_matches if object.get(approval_claims, "subject", identity.subject) == identity.subject

default approval_verified := false

# METADATA
# scope: rule
# title: Tool call approved
# description: |
#   A verified approval token covers this tenant, tool, argument digest and,
#   when it names one, this caller. Recorded in the decision log's
#   rule_labels on every approved call.
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
	approval_claims.tenant == request.tenant
	approval_claims.tool == request.tool_id
	approval_claims.args_sha256 == arguments_sha256
	approval_subject_matches
}

default approval_problem := "it was issued to another subject"

approval_problem := "it failed ES256 verification of its signature, issuer, audience or expiry" if {
	not approval_claims
} else := "it was issued for another tenant" if {
	not approval_claims.tenant == request.tenant
} else := "it was issued for another tool" if {
	not approval_claims.tool == request.tool_id
} else := "it covers other arguments" if {
	not approval_claims.args_sha256 == arguments_sha256
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
#   The x-nexus-approval token is not a valid control-plane approval for
#   this tenant, tool, argument digest and caller.
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
