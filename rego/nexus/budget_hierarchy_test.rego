# The budget bypass classes reported against LiteLLM's key -> user -> team
# -> tag hierarchy (BerriAI/litellm#11962, #26672, #27394, #28020, #27480),
# through the whole decision: here the hierarchy is tenant -> feature (bound
# to the API key, or a verified JWT claim) and model, every cap is checked on
# its own, so the strictest applicable cap always refuses.
package nexus.budget_hierarchy_test

import data.nexus.envoy.authz
import data.nexus.test_fixtures as fx

decide(req, state) := d if {
	d := authz.decision with input as req
		with data.nexus.config as fx.config
		with data.nexus_state as state
		with time.now_ns as fx.now_ns
		with opa.runtime as fx.runtime_eu
}

chat(api_key, tenant, headers) := fx.http_request(
	"POST", "/v1/chat/completions",
	object.union(fx.api_key_headers(tenant, api_key), headers),
)

refused_by(d) := {r.rule | some r in d.reasons}

acme_spend(spend) := json.patch(fx.state, [{"op": "replace", "path": "/spend/acme", "value": spend}])

# Key (feature) over its cap, team (tenant) under: the key's cap refuses.
test_key_cap_holds_while_the_team_is_under_its_cap if {
	d := decide(chat(fx.acme_batch_api_key, "acme", {"x-nexus-model": "gpt-4o"}), fx.state)
	d.http_status == 429
	refused_by(d) == {"nexus.budget.feature_cap_reached"}
}

# Team (tenant) over its cap, key (feature) under: the team's cap refuses.
test_team_cap_holds_while_the_key_is_under_its_cap if {
	state := acme_spend({"ratio": 1.0, "models": {}, "features": {"chat": 0.2}})
	d := decide(chat(fx.acme_chat_api_key, "acme", {"x-nexus-model": "gpt-4o"}), state)
	d.http_status == 429
	refused_by(d) == {"nexus.budget.tenant_cap_reached"}
}

# A key bound to no feature still answers to the team's cap.
test_key_without_a_feature_answers_to_the_team_cap if {
	d := decide(chat(fx.globex_api_key, "globex", {"x-nexus-model": "gpt-4o"}), fx.state)
	refused_by(d) == {"nexus.budget.tenant_cap_reached"}
}

# Tag (model) over its cap, key and team under: the model's cap refuses.
test_model_cap_holds_while_key_and_team_are_under if {
	d := decide(chat(fx.acme_chat_api_key, "acme", {"x-nexus-model": "gpt-4.1"}), fx.state)
	refused_by(d) == {"nexus.budget.model_cap_reached"}
}

# Claiming a looser scope by header (another feature) changes nothing: the
# feature is the key's, and every over-cap scope is named.
test_every_exhausted_scope_refuses_and_none_can_be_claimed_away if {
	state := acme_spend({"ratio": 1.0, "models": {"gpt-4.1": 1.0}, "features": {"batch": 1.2, "chat": 0.1}})
	d := decide(
		chat(fx.acme_batch_api_key, "acme", {"x-nexus-model": "gpt-4.1", "x-nexus-feature": "chat"}),
		state,
	)
	d.http_status == 429
	refused_by(d) == {
		"nexus.budget.feature_cap_reached",
		"nexus.budget.model_cap_reached",
		"nexus.budget.tenant_cap_reached",
	}
}

# Every scope under its cap: allowed (the caps do not refuse too much).
test_all_scopes_under_their_caps_is_allowed if {
	state := acme_spend({"ratio": 0.5, "models": {"gpt-4o": 0.5}, "features": {"chat": 0.5}})
	d := decide(chat(fx.acme_chat_api_key, "acme", {"x-nexus-model": "gpt-4o"}), state)
	d.allowed == true
}
