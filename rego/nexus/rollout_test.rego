package nexus.rollout_test

import data.nexus.rollout
import data.nexus.test_fixtures as fx

chat(headers) := fx.http_request("POST", "/v1/chat/completions", object.union(fx.acme_headers, headers))

chat_as(tenant, headers) := fx.http_request(
	"POST", "/v1/chat/completions",
	object.union(fx.api_key_headers(tenant, "unused"), headers),
)

routed(req) := m if {
	m := rollout.model with input as req with data.nexus.config as fx.config
}

resolved(req) := {"version": v, "reasons": {[r.rule, r.message] | some r in rs}} if {
	v := rollout.prompt_version with input as req with data.nexus.config as fx.config
	rs := rollout.deny with input as req with data.nexus.config as fx.config
}

# Expected values computed outside OPA: hashlib.sha256(key.encode()).hexdigest()[:8]
test_slot_matches_reference_values if {
	rollout.slot("") == "e3b0c442"
	rollout.slot("abc") == "ba7816bf"
	rollout.slot("chat-default-2026-11:acme") == "2be9702a"
	rollout.slot("chat-default-2026-11:variant:acme") == "85185d37"
	rollout.slot("chat-default-2026-11:globex") == "3ed50f44"
	rollout.slot("chat-default-2026-11:variant:globex") == "605d5bce"
}

flag := fx.config.rollouts.models["chat-default"]

test_tenant_outside_the_canary_gets_the_baseline if {
	# slot 3ed50f44 >= canary_below 33333333 (20 %)
	routed(chat_as("globex", {"x-nexus-model": "chat-default"})) == "gpt-4o"
}

test_tenant_in_the_canary_gets_its_variant if {
	# slot 2be9702a < 33333333; variant slot 85185d37 is in [80000000, g)
	routed(chat({"x-nexus-model": "chat-default"})) == "gpt-4.1-mini"
}

test_variant_is_chosen_by_its_own_slot if {
	# everyone in the canary; globex's variant slot 605d5bce is in [00000000, 80000000)
	rollout.model == "gpt-4.1" with input as chat_as("globex", {"x-nexus-model": "chat-default"})
		with data.nexus.config as fx.everyone_in_canary
}

test_tenant_override_wins_over_bucketing if {
	routed(chat_as("umbrella", {"x-nexus-model": "chat-default"})) == "gpt-4.1"
}

test_kill_switch_sends_everyone_to_the_baseline if {
	config := json.patch(fx.config, [{
		"op": "replace",
		"path": "/rollouts/models/chat-default/kill_switch",
		"value": true,
	}])
	every tenant in ["acme", "globex", "umbrella"] {
		rollout.model == "gpt-4o" with input as chat_as(tenant, {"x-nexus-model": "chat-default"})
			with data.nexus.config as config
	}
}

test_canary_slot_without_a_variant_falls_back_to_the_baseline if {
	config := json.patch(fx.everyone_in_canary, [{
		"op": "replace", "path": "/rollouts/models/chat-default/variants",
		"value": [{"name": "gpt-4.1", "weight": 1, "from": "00000000", "to": "00418937"}],
	}])
	rollout.model == "gpt-4o" with input as chat({"x-nexus-model": "chat-default"}) with data.nexus.config as config
}

test_subject_stickiness_uses_x_nexus_subject if {
	subject_flag := object.union(flag, {"sticky": "subject"})
	rollout.sticky_value(subject_flag) == "u-7" with input as chat({"x-nexus-subject": "u-7"})

	# u-5: slot 217847ea < 33333333, variant slot 858cf16d in [80000000, g)
	rollout.choice(subject_flag) == "gpt-4.1-mini" with input as chat({"x-nexus-subject": "u-5"})

	# u-1: slot a7f5cb8d >= 33333333
	rollout.choice(subject_flag) == "gpt-4o" with input as chat({"x-nexus-subject": "u-1"})
}

test_subject_stickiness_falls_back_to_the_caller if {
	subject_flag := object.union(flag, {"sticky": "subject"})
	rollout.sticky_value(subject_flag) == "apikey:acme-prod-1" with input as chat({}) with data.nexus.config as fx.config
}

test_tenant_stickiness_uses_the_tenant if {
	rollout.sticky_value(flag) == "acme" with input as chat({"x-nexus-subject": "u-7"})
}

test_model_without_a_flag_is_used_as_named if {
	routed(chat({"x-nexus-model": "gpt-4.1"})) == "gpt-4.1"
	routed(chat({"x-nexus-model": "no-such-model"})) == "no-such-model"
}

test_no_model_header_routes_nowhere if {
	routed(chat({})) == ""
}

test_prompt_without_version_gets_the_rollout_baseline if {
	resolved(chat({"x-nexus-prompt": "support-agent"})) == {"version": "3", "reasons": set()}
}

test_prompt_rollout_override if {
	resolved(chat_as("globex", {"x-nexus-prompt": "support-agent"})).version == "4"
}

test_prompt_without_a_flag_gets_its_default_version if {
	resolved(chat({"x-nexus-prompt": "triage"})) == {"version": "2", "reasons": set()}
}

test_pinned_prompt_version_bypasses_the_rollout if {
	resolved(chat_as("globex", {"x-nexus-prompt": "support-agent@3"})) == {"version": "3", "reasons": set()}
}

killed_prompts := json.patch(fx.config, [{
	"op": "replace",
	"path": "/rollouts/prompts/support-agent/kill_switch",
	"value": true,
}])

test_pinned_prompt_version_cannot_bypass_a_kill_switch if {
	every pin in ["support-agent@4", "support-agent@3"] {
		rollout.prompt_version == "3" with input as chat_as("globex", {"x-nexus-prompt": pin})
			with data.nexus.config as killed_prompts
	}
}

test_no_prompt_header_resolves_nothing if {
	resolved(chat({})) == {"version": "", "reasons": set()}
}

test_unknown_prompt_is_400 if {
	rs := rollout.deny with input as chat({"x-nexus-prompt": "nope@1"}) with data.nexus.config as fx.config
	rs == {{
		"rule": "nexus.rollout.prompt_unknown",
		"message": `x-nexus-prompt "nope@1" names no known prompt`,
		"controls": ["SOC2:CC8.1", "ISO27001:A.8.32", "PCI:6.5.1", "ISO42001:A.6.2.5"],
		"status": 400,
	}}
}

test_malformed_prompt_header_is_400 if {
	resolved(chat({"x-nexus-prompt": "support-agent@3@4"})).reasons == {[
		"nexus.rollout.prompt_unknown",
		`x-nexus-prompt "support-agent@3@4" names no known prompt`,
	]}
	resolved(chat({"x-nexus-prompt": "@3"})).reasons == {[
		"nexus.rollout.prompt_unknown",
		`x-nexus-prompt "@3" names no known prompt`,
	]}
}

test_unknown_prompt_version_is_400 if {
	resolved(chat({"x-nexus-prompt": "support-agent@9"})).reasons == {[
		"nexus.rollout.prompt_version_unknown",
		`prompt "support-agent" has no version "9"`,
	]}
}

test_retired_prompt_version_is_400 if {
	rs := rollout.deny with input as chat({"x-nexus-prompt": "support-agent@1"}) with data.nexus.config as fx.config
	{[r.rule, r.status, r.message] | some r in rs} == {[
		"nexus.rollout.prompt_version_retired", 400,
		`version "1" of prompt "support-agent" is retired`,
	]}
}

test_rollout_to_a_retired_version_is_400 if {
	config := json.patch(fx.config, [{"op": "replace", "path": "/rollouts/prompts/support-agent/baseline", "value": "1"}])
	rs := rollout.deny with input as chat({"x-nexus-prompt": "support-agent"}) with data.nexus.config as config
	{r.rule | some r in rs} == {"nexus.rollout.prompt_version_retired"}
}
