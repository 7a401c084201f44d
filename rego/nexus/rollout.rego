# METADATA
# title: Rollout
# description: |
#   Resolves a model alias to a model and a prompt to a version, using the
#   rollout flags' kill switch, tenant overrides and sticky canary
#   bucketing exactly as rego/README.md defines them.
package nexus.rollout

import data.nexus.identity
import data.nexus.reason
import data.nexus.request

# A key's slot is the first eight hex digits of its SHA-256: a point in
# [0, 2^32) written so that comparing strings compares numbers. The compiler
# turns percentages and weights into slot bounds, so a request costs one hash
# and a few string comparisons, no arithmetic.
slot(key) := substring(crypto.sha256(key), 0, 8)

# Without an x-nexus-subject, the caller is the only stable subject there
# is; falling back to it keeps a subject-sticky flag sticky.
sticky_subject := subject if {
	subject := request.headers["x-nexus-subject"]
	subject != ""
} else := identity.subject

sticky_value(flag) := sticky_subject if {
	flag.sticky == "subject"
} else := request.tenant

# One function call per flag, with the canary test and the variant pick
# written inline: every call and rule OPA evaluates costs allocations on
# each request, and this runs on every chat completion and prompt.
# "g" sorts after every hex slot, so a flag at 100 % needs no special case.
choice(flag) := flag.baseline if {
	flag.kill_switch == true
} else := flag.overrides[request.tenant] if {
	flag.overrides[request.tenant]
} else := name if {
	flag.canary_percent > 0
	key := sticky_value(flag)
	slot(concat("", [flag.id, ":", key])) < flag.canary_below
	position := slot(concat("", [flag.id, ":variant:", key]))
	some variant in flag.variants
	variant.from <= position
	position < variant.to
	name := variant.name
} else := flag.baseline

requested_model := request.headers["x-nexus-model"]

default model := ""

# The definitions of model and prompt_version exclude each other, so each
# is one else-chain: evaluation stops at the branch that applies instead of
# trying every definition on every request.
model := chosen if {
	chosen := choice(data.nexus.config.rollouts.models[requested_model])
} else := requested_model if {
	requested_model
	not data.nexus.config.rollouts.models[requested_model]
}

# "id" or "id@version"; a header with more than one "@" names no prompt.
prompt_header := request.headers["x-nexus-prompt"]

prompt_parts := split(prompt_header, "@")

prompt_id := prompt_parts[0] if {
	count(prompt_parts) <= 2
	prompt_parts[0] != ""
}

prompt := data.nexus.config.prompts[prompt_id]

# A pinned version bypasses the rollout's canary and overrides (the caller
# asked for it), but never its kill switch: a killed prompt serves its
# baseline to everyone, pinned or not.
pinned_version := prompt_parts[1] if prompt_id

prompt_killed if data.nexus.config.rollouts.prompts[prompt_id].kill_switch == true

default prompt_version := ""

prompt_version := pinned_version if {
	pinned_version
	not prompt_killed
} else := version if {
	not pinned_version
	version := choice(data.nexus.config.rollouts.prompts[prompt_id])
} else := version if {
	pinned_version
	prompt_killed
	version := data.nexus.config.rollouts.prompts[prompt_id].baseline
} else := version if {
	not pinned_version
	not data.nexus.config.rollouts.prompts[prompt_id]
	version := prompt.default_version
}

# No rule below refuses: the request names no prompt, or a version of it
# that is served. The gateway decision skips them on this (rollout_test
# proves that prompt_servable leaves deny empty).
prompt_servable if not prompt_header

prompt_servable if prompt.versions[prompt_version].status != "retired"

# METADATA
# title: Unknown prompt
# description: x-nexus-prompt names no prompt in the compiled prompt catalog.
# custom:
#   id: nexus.rollout.prompt_unknown
#   status: 400
# labels:
#   controls:
#     - SOC2:CC8.1
#     - ISO27001:A.8.32
#     - PCI:6.5.1
#     - ISO42001:A.6.2.5
deny contains reason.build(rego.metadata.rule(), msg) if {
	prompt_header
	not prompt
	msg := sprintf("x-nexus-prompt %q names no known prompt", [prompt_header])
}

# METADATA
# title: Unknown prompt version
# description: The pinned or rolled-out version is not a version of the prompt.
# custom:
#   id: nexus.rollout.prompt_version_unknown
#   status: 400
# labels:
#   controls:
#     - SOC2:CC8.1
#     - ISO27001:A.8.32
#     - PCI:6.5.1
#     - ISO42001:A.6.2.5
deny contains reason.build(rego.metadata.rule(), msg) if {
	prompt
	not prompt.versions[prompt_version]
	msg := sprintf("prompt %q has no version %q", [prompt_id, prompt_version])
}

# METADATA
# title: Retired prompt version
# description: A retired prompt version is never served again, whether pinned or rolled out.
# custom:
#   id: nexus.rollout.prompt_version_retired
#   status: 400
# labels:
#   controls:
#     - SOC2:CC8.1
#     - ISO27001:A.8.32
#     - PCI:6.5.1
#     - ISO42001:A.6.2.5
deny contains reason.build(rego.metadata.rule(), msg) if {
	prompt.versions[prompt_version].status == "retired"
	msg := sprintf("version %q of prompt %q is retired", [prompt_version, prompt_id])
}
