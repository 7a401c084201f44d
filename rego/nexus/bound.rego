# METADATA
# title: A request's bounds
# description: |
#   What a chat completion can cost at most, before the model is known: its
#   token bound (input at most one token per body byte, output at most
#   max_tokens), and what the tenant's budget has left as the state bundle
#   last published it. nexus.cost prices the routed model with them, and
#   nexus.routing a fallback, so both use one definition.
package nexus.bound

import data.nexus.request

tenant_budget := data.nexus.config.tenants[request.tenant].budget

unpriced_allowed if tenant_budget.allow_unpriced_models == true

# --- The request's token bound ---------------------------------------------

http_request := input.attributes.request.http

# A byte-level tokenizer never makes more tokens than there are bytes, so
# the body's size bounds the prompt's tokens (chat templates add fewer
# tokens per message than the message's JSON adds bytes). Envoy states the
# forwarded body's size; it survives the decision log's masking, so replay
# sees the bound the live decision saw. Without it (another client of the
# policy), base64 of the body counts its UTF-8 bytes (rounded up to a
# multiple of 3), and Envoy's protojson gives a bytes body as base64
# already. content-length covers a body forwarded only in part.
# Envoy's protobuf says -1 for a size it does not know.
stated_size := n if {
	n := to_number(http_request.size)
	n >= 0
}

body_sizes contains stated_size

body_sizes contains (count(base64.encode(text)) / 4) * 3 if {
	not stated_size
	text := http_request.body
	is_string(text)
}

body_sizes contains (count(encoded) / 4) * 3 if {
	not stated_size
	some field in ["raw_body", "rawBody"]
	encoded := http_request[field]
	is_string(encoded)
}

body_sizes contains to_number(request.headers["content-length"])

default body_bytes := 0

body_bytes := max(body_sizes) if count(body_sizes) > 0

# OpenAI's max_completion_tokens replaced max_tokens; an upstream may
# honour either, so the larger one bounds the output.
output_fields := ["max_tokens", "max_completion_tokens"]

requested_output contains n if {
	some field in output_fields
	n := input.parsed_body[field]
}

positive_integer(n) if {
	is_number(n)
	n == floor(n)
	n >= 1
}

invalid_output contains n if {
	some n in requested_output
	not positive_integer(n)
}

# --- What the budget has left ------------------------------------------------

default spend := {}

spend := data.nexus_state.spend[request.tenant]

# Cap − spend in micro-USD: exact where the state bundle states it; from the
# rounded ratio for a state bundle that predates remaining figures; the
# whole cap where nothing was spent (the tenant or scope is not listed).
left(exact, _, _) := exact if is_number(exact)

left(exact, cap, ratio) := floor((cap * (1 - ratio)) * 1000000) if not is_number(exact)
