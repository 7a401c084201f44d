# METADATA
# title: Decision log masking
# description: |
#   OPA evaluates data.system.log.mask on every decision log event before
#   it leaves the enforcer; input here is that event. Credentials and
#   request bodies never reach the audit log, yet the audit can still tell
#   which credential was used.
package system.log

request_path := "/input/attributes/request/http"

http_request := input.input.attributes.request.http

# A short SHA-256 prefix: enough to tell keys apart in the audit, and for an
# API key it is the start of the hash under which the bundle lists the key.
fingerprint(token) := sprintf("sha256:%s", [substring(crypto.sha256(token), 0, 16)])

# Without the "Bearer " prefix, so the fingerprint of an API key matches
# data.nexus.config.api_keys; anything else is fingerprinted whole.
credential := token if {
	lower(substring(http_request.headers.authorization, 0, 7)) == "bearer "
	token := trim_space(substring(http_request.headers.authorization, 7, -1))
} else := http_request.headers.authorization

tool_call if {
	input.input.parsed_path[0] == "v1"
	input.input.parsed_path[1] == "tools"
}

chat_call if input.input.parsed_path == ["v1", "chat", "completions"]

# Of a chat's body only its output bounds, which its worst-case cost
# (nexus.cost) reads, so replay decides as the live decision did. A bound
# that is not a number is logged as null: refused as invalid live and on
# replay alike, and never text from the client.
chat_bounds := {field: bound |
	some field in ["max_tokens", "max_completion_tokens"]
	value := input.input.parsed_body[field]
	bound := number_or_null(value)
} if {
	chat_call
	is_object(input.input.parsed_body)
}

number_or_null(value) := value if is_number(value)

number_or_null(value) := null if not is_number(value)

# METADATA
# title: Secrets masked in decision logs
# description: |
#   Approval tokens, cookies, stray API-key headers and request bodies are
#   removed; the bearer credential is replaced by its fingerprint.
# entrypoint: true
# labels:
#   controls:
#     - SOC2:CC7.2
#     - ISO27001:A.8.11
#     - ISO27001:A.8.15
#     - HIPAA:164.312(b)
#     - PCI:8.3.2
#     - ISO42001:A.6.2.8
mask contains path if {
	some header in ["x-nexus-approval", "cookie", "x-api-key"]

	# Listed only when the header was sent, so the event's "erased" list
	# says exactly what replay cannot see.
	http_request.headers[header]
	path := concat("/", [request_path, "headers", header])
}

# Raw bodies duplicate parsed_body; protojson names the raw body "rawBody",
# older encoders "raw_body"; headerMap is Envoy's alternative encoding of
# every header, secrets included.
mask contains path if {
	some field in ["body", "raw_body", "rawBody", "headerMap", "header_map"]
	path := concat("/", [request_path, field])
}

# A tool call's arguments are the action the audit must be able to show
# (the audit service stores them encrypted under the tenant's key); any
# other body is a prompt or a chat, kept out of the log (a chat's bounds
# aside).
mask contains "/input/parsed_body" if {
	not tool_call
	not chat_bounds
}

mask contains {"op": "upsert", "path": "/input/parsed_body", "value": chat_bounds}

# Query strings are where careless clients put secrets; the path is kept
# without them.
mask contains "/input/parsed_query"

mask contains {
	"op": "upsert",
	"path": concat("/", [request_path, "path"]),
	"value": split(http_request.path, "?")[0],
} if {
	contains(http_request.path, "?")
}

# With decision_logs.nd_builtin_cache enabled, OPA would log the arguments
# of these calls: the JWTs and key sets, the tool arguments, and the
# runtime's environment variables.
mask contains path if {
	some builtin in ["io.jwt.decode_verify", "json.match_schema", "opa.runtime"]
	path := concat("/", ["/nd_builtin_cache", builtin])
}

mask contains {
	"op": "upsert",
	"path": concat("/", [request_path, "headers", "authorization"]),
	"value": fingerprint(credential),
}
