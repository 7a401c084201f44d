package nexus.capability_test

import data.nexus.capability
import data.nexus.envoy.authz

config := {
	"tools": {"web-search": {"risk": "low"}, "db-write": {"risk": "critical"}},
	"capabilities": {
		"routes": {"chat.completions": "chat", "tools.invoke": "approved-tools"},
		"tools": {"web-search": "agent-tools"},
	},
}

request(method, path) := {
	"attributes": {"request": {"http": {"method": method, "headers": {}}}},
	"parsed_path": split(trim_prefix(path, "/"), "/"),
}

labels_of(method, path) := labels if {
	labels := capability.labels with input as request(method, path)
		with data.nexus.config as config
}

test_a_chat_completion_belongs_to_the_capability_naming_its_route if {
	labels_of("POST", "/v1/chat/completions") == {"route": "chat.completions", "tool": "none", "capability": "chat"}
}

test_a_tool_call_belongs_to_the_capability_naming_its_tool if {
	labels := labels_of("POST", "/v1/tools/web-search:invoke")
	labels == {"route": "tools.invoke", "tool": "web-search", "capability": "agent-tools"}
}

test_a_tool_no_capability_names_falls_back_to_its_route if {
	labels := labels_of("POST", "/v1/tools/db-write:invoke")
	labels == {"route": "tools.invoke", "tool": "db-write", "capability": "approved-tools"}
}

test_an_unknown_tool_is_one_label_whatever_the_client_sends if {
	labels_of("POST", "/v1/tools/x1:invoke").tool == "unknown"
	labels_of("POST", "/v1/tools/x2:invoke").tool == "unknown"
}

test_a_route_no_capability_names_has_none if {
	labels_of("GET", "/v1/chats/c1") == {"route": "chats.read", "tool": "none", "capability": "none"}
}

test_an_unknown_path_has_no_route if {
	labels_of("GET", "/admin") == {"route": "none", "tool": "none", "capability": "none"}
}

test_a_bundle_without_slos_names_no_capability if {
	got := capability.labels with input as request("POST", "/v1/chat/completions")
		with data.nexus.config as {"tools": {}}
	got.capability == "none"
}

test_the_decision_carries_the_labels_allowed_or_refused if {
	refused := authz.decision with input as request("POST", "/v1/chat/completions")
		with data.nexus.config as config
	refused.allowed == false
	refused.labels == {"route": "chat.completions", "tool": "none", "capability": "chat"}
}

# labels takes a shortcut off tool calls; it must say what route, tool and
# name say, on every route, with and without an SLOs spec.
label_requests := [
	["POST", "/v1/chat/completions"],
	["GET", "/v1/chats/c-1"],
	["DELETE", "/v1/chats/c-1"],
	["DELETE", "/v1/subjects/s-1"],
	["POST", "/v1/tools/web-search:invoke"],
	["POST", "/v1/tools/db-write:invoke"],
	["POST", "/v1/tools/nope:invoke"],
	["GET", "/v1/nowhere"],
]

label_configs := [config, {"tools": config.tools}, {}, {"capabilities": {"routes": {"chats.read": "history"}}}]

test_the_labels_shortcut_says_what_route_tool_and_name_say if {
	every pair in label_requests {
		req := request(pair[0], pair[1])
		every cfg in label_configs {
			labels := capability.labels with input as req with data.nexus.config as cfg
			parts := {"route": capability.route, "tool": capability.tool, "capability": capability.name}
				with input as req
				with data.nexus.config as cfg
			labels == parts
		}
	}
}
