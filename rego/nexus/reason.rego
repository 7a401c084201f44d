# METADATA
# title: Decision reasons
# description: |
#   Turns a deny rule's own METADATA into the reason it contributes, so the
#   mapping from rule to control IDs is written once, beside the rule.
package nexus.reason

# Callers pass rego.metadata.rule(): it always describes the rule it is
# written in, so this function cannot look it up on their behalf.
#
# An unannotated rule still yields a 403 reason: a missing METADATA block
# must never turn a refusal into an allow.
build(metadata, message) := {
	"rule": object.get(metadata, ["custom", "id"], "nexus.unannotated"),
	"message": message,
	"controls": object.get(metadata, ["labels", "controls"], []),
	"status": object.get(metadata, ["custom", "status"], 403),
}
