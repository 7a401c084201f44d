package nexus.reason_test

import data.nexus.reason

test_reason_is_built_from_rule_metadata if {
	metadata := {
		"title": "Example",
		"custom": {"id": "nexus.example.refused", "status": 429},
		"labels": {"controls": ["SOC2:A1.1"]},
	}
	reason.build(metadata, "why") == {
		"rule": "nexus.example.refused",
		"message": "why",
		"controls": ["SOC2:A1.1"],
		"status": 429,
	}
}

# A deny rule whose METADATA was forgotten must still refuse.
test_unannotated_rule_still_refuses if {
	reason.build({}, "why") == {
		"rule": "nexus.unannotated",
		"message": "why",
		"controls": [],
		"status": 403,
	}
}
