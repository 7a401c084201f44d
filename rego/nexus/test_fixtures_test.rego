# Test-only fixtures: a small compiled config, a state bundle and signing
# keys. Every key here was generated for these tests and protects nothing.
package nexus.test_fixtures

# 2026-11-24T12:00:00Z
now_s := 1795521600

now_ns := now_s * 1000000000

day_ns := ((24 * 60) * 60) * 1000000000

runtime_eu := {"config": {"labels": {"region": "eu-west-1"}}}

runtime_us := {"config": {"labels": {"region": "us-east-1"}}}

acme_issuer := "https://login.acme.example"

record_issuer := "https://chat-store.test"

globex_issuer := "https://login.globex.example"

acme_api_key := "nx-acme-prod-1-0f3c9a"

globex_api_key := "nx-globex-ci-77ab"

initech_api_key := "nx-initech-1-5d2e"

umbrella_api_key := "nx-umbrella-1-c4f1"

hooli_api_key := "nx-hooli-1-98aa"

# Keys bound to a product feature in the RBAC spec: their spend is booked to it.
acme_chat_api_key := "nx-acme-chat-31d0"

acme_batch_api_key := "nx-acme-batch-e71c"

# JWKs: "private" signs in tests, "public" is what the config trusts.
keys := {
	"idp_rsa": {
		"private": {
			"kty": "RSA",
			"kid": "idp_rsa",
			"alg": "RS256",
			"use": "sig",
			"n": "rPbR4k_vYd42Ac5aVj31fkQA-S_rXnSBmA3IMAWNrgMkSSRuDD9o-ltqYgCkKKp-lify-iRHeT-_GeyotoPUIICxwMeX_txy2qbHABXiKoy6k79nG4JCLD0r_VrApiT2deNBahD1459Cw5qzpKRqehdUZAsBBC1mv4zYVdS5eacuD8Ztf6QyyuS-BTJxh06Y14jLCdceJuD_durk106zgzQ6hPfVxcCS2itIjSPxrCCl6v7Voj_G4leA2re1y9-aYCziwo3xPyJ5n-DC-C_8CAkpicYxkq1bgWCG8-Ihk29EmycMt1ScGHjY6k3Rb2O-X7eKKWpCPGwXccB7PaLGhw",
			"e": "AQAB",
			"d": "Ewrm4f20Te1tu2vWnPbGrRdw6_5knB-Y7P6yHZIJnoY7W897oN7nqziepm-KTe0yG_dbVELjmOvLGbWT1ZRUqcdsH9yu__Y8BuqkWilj9Gn4rgTn-yqvfQ4MZnZeuMFfs8GeFWlh86TjGtn7ZpMGI1mnhuQslnh71CGo57o7OV4KK8tqp4SlfSxLu60wFpRc0JM46EUdvn7Yo19Tue_zeIZ3YsJxTVjs0Uc5H4TXxQNrNaSJ3yUSfIbds7V2CggawU68-RfaXzdvSZq7HGZGvXAnqpm0ux2CW2NRlfyDtKLKzYOy9XY2iG3Oyj2CUVyuvt34eW2BooKPfJ7xq-vnoQ",
			"p": "3tK6e-x_cjNh_UrwpLsjQzc0DdeTg1gx5kj1wHJr1t71b1TEEPr6GZMwxcGg8girB7TkkmrWD337a6KfbCP8iCvMtlyzzhUu6SCzu_fKMZgoh6o4hn8xqAAH0QmWk0DebO26UkGYamtwpXNlQu01d5-4Xy4vdmyFZ3Y3Mc-vlf8",
			"q": "xreiAhNGWgOE_c0rsUX3yq1QvIE30ynSrhfXy_TsOdere-HqcPLP8--sNENjVA_2YPuFsIecj3q8LaHzFwgywUKV7XBNHIzgYynturP-1a63XYkfa4-5wzn-9X8SLxO5kd2WuEo3_uqvJnojaPajTymzpHx430ErhMwGbR2FH3k",
			"dp": "IjXcZ9Zhotj8vHTbCY-p1FIPbeihP1M1JhQhlxB6Oh01NYigKbM-3tpYbKRT35UxHRfK2CgLAYnoJhhrvaCwzv9aiM0m1gcukqBwt_VNV9vyrRGXaB7zMsX-bTu5oJYfED5XkvV7PyuLuftDmsjsopclKYffxaDXwpDF3KH0ZWU",
			"dq": "o7FtUUxTbZ7slK3ISjWa02hF06KWO-p91E9rwmU1mshgSKJnHzfFueo67qp8TikACg_npu1vOHogPW7k8pocRTr2iisyOkyKIuXNITlYuOk9v11Pdqlkmr9RmSVd803KVbA1kgYBboogUg_Wz4YsLO_rPZoTb8Uddj0jJgtlN_E",
			"qi": "Jf46D21Sl5VQYq1FoFy082c0jP93uOcPlXlz11VBnp1nKiQaPfXn94gk3qUzVz5uGYc-shr0EICcmJAQSJ6LaplIcplWjvI1TOTgQ9gROQtsIHKx-eVPz51849qe2Z8ZZsuYBdNNKfRRYncY1anTZewtdKziDRohmDY2t1xcF_g",
		},
		"public": {
			"kty": "RSA",
			"kid": "idp_rsa",
			"alg": "RS256",
			"use": "sig",
			"n": "rPbR4k_vYd42Ac5aVj31fkQA-S_rXnSBmA3IMAWNrgMkSSRuDD9o-ltqYgCkKKp-lify-iRHeT-_GeyotoPUIICxwMeX_txy2qbHABXiKoy6k79nG4JCLD0r_VrApiT2deNBahD1459Cw5qzpKRqehdUZAsBBC1mv4zYVdS5eacuD8Ztf6QyyuS-BTJxh06Y14jLCdceJuD_durk106zgzQ6hPfVxcCS2itIjSPxrCCl6v7Voj_G4leA2re1y9-aYCziwo3xPyJ5n-DC-C_8CAkpicYxkq1bgWCG8-Ihk29EmycMt1ScGHjY6k3Rb2O-X7eKKWpCPGwXccB7PaLGhw",
			"e": "AQAB",
		},
	},
	"idp_ec": {
		"private": {
			"kty": "EC",
			"crv": "P-256",
			"kid": "idp_ec",
			"alg": "ES256",
			"use": "sig",
			"x": "oU4_rw5-aiXectiKlyye2LtxhENVF5RJyIs0qGiBmB4",
			"y": "oOdr-ZFlwhYG35SkBQKORNfdg4zUKRkZZ20kOaPSzCo",
			"d": "UZgakUWR0Dp-8yoyt2V1-bqxGjFKjStTywpJdkkSVVE",
		},
		"public": {
			"kty": "EC",
			"crv": "P-256",
			"kid": "idp_ec",
			"alg": "ES256",
			"use": "sig",
			"x": "oU4_rw5-aiXectiKlyye2LtxhENVF5RJyIs0qGiBmB4",
			"y": "oOdr-ZFlwhYG35SkBQKORNfdg4zUKRkZZ20kOaPSzCo",
		},
	},
	"record_ec": {
		"private": {
			"kty": "EC",
			"crv": "P-256",
			"kid": "chat-store-test",
			"alg": "ES256",
			"use": "sig",
			"x": "sVg2yZ1YxUM-smKELQaz3PVKkONPIqcN7V0zZmam0jQ",
			"y": "-JJViROTHzK3DOaCvNrySOt6mxmLRxNCTQ4ZzvHQhfQ",
			"d": "cUF7s9a6NGZukcWAzvv1c-1JEmHGaRCDtVpEgEU29P8",
		},
		"public": {
			"kty": "EC",
			"crv": "P-256",
			"kid": "chat-store-test",
			"alg": "ES256",
			"use": "sig",
			"x": "sVg2yZ1YxUM-smKELQaz3PVKkONPIqcN7V0zZmam0jQ",
			"y": "-JJViROTHzK3DOaCvNrySOt6mxmLRxNCTQ4ZzvHQhfQ",
		},
	},
	"approval_ec": {
		"private": {
			"kty": "EC",
			"crv": "P-256",
			"kid": "approval_ec",
			"alg": "ES256",
			"use": "sig",
			"x": "50uEuli675Od1R7wtdejghYbgcXU1rWrNULdCluO56g",
			"y": "mqPHnJ3RBpvn3zK9oYtcxTD8Xpdyk0by54pr77HJ-_4",
			"d": "SxXHZO6X7JCO2ygdB0ISPSRcHswIvtoRORd6XHBjFjI",
		},
		"public": {
			"kty": "EC",
			"crv": "P-256",
			"kid": "approval_ec",
			"alg": "ES256",
			"use": "sig",
			"x": "50uEuli675Od1R7wtdejghYbgcXU1rWrNULdCluO56g",
			"y": "mqPHnJ3RBpvn3zK9oYtcxTD8Xpdyk0by54pr77HJ-_4",
		},
	},
	"rogue_ec": {
		"private": {
			"kty": "EC",
			"crv": "P-256",
			"kid": "rogue_ec",
			"alg": "ES256",
			"use": "sig",
			"x": "J9c8bgi847VpG3vjCzeu0CWtYqtnjyr2qiBcHdCcT7k",
			"y": "xVE4-Xd92EnyRkdS8n94eeqTavzD-H1Xvkmd6nADW8Y",
			"d": "N76LvFh7esAg9ci0aWoYW1JbK1dBeWbPaf-07-XB2jU",
		},
		"public": {
			"kty": "EC",
			"crv": "P-256",
			"kid": "rogue_ec",
			"alg": "ES256",
			"use": "sig",
			"x": "J9c8bgi847VpG3vjCzeu0CWtYqtnjyr2qiBcHdCcT7k",
			"y": "xVE4-Xd92EnyRkdS8n94eeqTavzD-H1Xvkmd6nADW8Y",
		},
	},
}

jwks(public_keys) := json.marshal({"keys": public_keys})

config := {
	"bundle": {"name": "gateway"},
	"regions": {"eu-west-1": {"jurisdiction": "eu"}, "us-east-1": {"jurisdiction": "us"}},
	"tenants": {
		"acme": {
			"name": "Acme Corp", "plan": "enterprise", "status": "active", "jurisdiction": "eu",
			"budget": {"soft_cap_ratio": 0.8, "on_hard_cap": "refuse"},
		},
		"globex": {
			"name": "Globex", "plan": "team", "status": "active", "jurisdiction": null,
			"budget": {"soft_cap_ratio": 0.9, "on_hard_cap": "disable"},
		},
		"initech": {
			"name": "Initech", "plan": "team", "status": "suspended", "jurisdiction": null,
			"budget": {"soft_cap_ratio": 0.8, "on_hard_cap": "refuse"},
		},
		"umbrella": {
			"name": "Umbrella", "plan": "enterprise", "status": "active", "jurisdiction": "us",
			"budget": {"soft_cap_ratio": 0.8, "on_hard_cap": "refuse"},
		},
		"hooli": {
			"name": "Hooli", "plan": "team", "status": "active", "jurisdiction": null,
			"budget": {"soft_cap_ratio": 0.8, "on_hard_cap": "disable"},
		},
	},
	"models": {
		"gpt-4o": {
			"provider": "openai", "plans": {"team": true, "enterprise": true},
			"price": {"input_usd_per_mtok": 2.5, "output_usd_per_mtok": 10}, "max_output_tokens": 16384,
		},
		"gpt-4.1": {
			"provider": "openai", "plans": {"enterprise": true},
			"price": {"input_usd_per_mtok": 2, "output_usd_per_mtok": 8}, "max_output_tokens": 32768,
		},
		"gpt-4.1-mini": {
			"provider": "openai", "plans": {"team": true, "enterprise": true},
			"price": {"input_usd_per_mtok": 0.4, "output_usd_per_mtok": 1.6}, "max_output_tokens": 32768,
		},
	},
	"roles": {
		"chat-user": {"permissions": {"chat:completions": true}},
		"dpo": {"permissions": {"subjects:erase": true, "chats:delete": true}},
	},
	"grants": {
		"acme": {
			"apikey:acme-prod-1": {
				"chat:completions": true, "chats:read": true, "chats:delete": true,
				"tools:web-search": true, "tools:payments-refund": true, "tools:legacy-export": true,
			},
			"user:alice@acme.example": {
				"chat:completions": true, "chats:read": true, "subjects:erase": true,
				"tools:payments-refund": true,
			},
			"service:batch": {"chat:completions": true},
			"apikey:acme-chat": {"chat:completions": true},
			"apikey:acme-batch": {"chat:completions": true},
		},
		"globex": {
			"apikey:globex-ci": {
				"chat:completions": true, "chats:delete": true, "subjects:erase": true,
				"tools:web-search": true,
			},
			"user:carol": {"chat:completions": true},
		},
		"initech": {"apikey:initech-1": {"chat:completions": true}},
		"umbrella": {"apikey:umbrella-1": {"chat:completions": true}},
		"hooli": {"apikey:hooli-1": {"chat:completions": true, "chats:read": true}},
	},
	"api_keys": {
		crypto.sha256(acme_api_key): {"tenant": "acme", "subject": "apikey:acme-prod-1"},
		crypto.sha256(globex_api_key): {"tenant": "globex", "subject": "apikey:globex-ci"},
		crypto.sha256(initech_api_key): {"tenant": "initech", "subject": "apikey:initech-1"},
		crypto.sha256(umbrella_api_key): {"tenant": "umbrella", "subject": "apikey:umbrella-1"},
		crypto.sha256(hooli_api_key): {"tenant": "hooli", "subject": "apikey:hooli-1"},
		crypto.sha256(acme_chat_api_key): {"tenant": "acme", "subject": "apikey:acme-chat", "feature": "chat"},
		crypto.sha256(acme_batch_api_key): {"tenant": "acme", "subject": "apikey:acme-batch", "feature": "batch"},
	},
	"issuers": {
		acme_issuer: {
			"audience": "nexus-gateway", "tenant_claim": "nexus_tenant", "tenants": {"acme": true},
			"jwks": jwks([keys.idp_rsa.public]),
		},
		globex_issuer: {
			"audience": "nexus-gateway", "tenant_claim": "org", "tenants": {"globex": true},
			"jwks": jwks([keys.idp_ec.public]),
		},
	},
	"record_signers": {record_issuer: {
		"audience": "nexus-gateway",
		"tenants": {"acme": true, "globex": true, "hooli": true, "umbrella": true},
		"max_ttl_s": 300,
		"jwks": jwks([keys.record_ec.public]),
	}},
	"approval": {
		"issuer": "nexus-control-plane", "audience": "nexus-gateway", "jwks": jwks([keys.approval_ec.public]),
		"max_ttl_s": {"low": 3600, "medium": 3600, "high": 1800, "critical": 900},
	},
	"tools": {
		"web-search": {
			"risk": "low", "permission": "tools:web-search", "approval_required": false,
			"schema": {
				"type": "object", "properties": {"query": {"type": "string"}},
				"required": ["query"], "additionalProperties": false,
			},
		},
		"payments-refund": {
			"risk": "high", "permission": "tools:payments-refund", "approval_required": true,
			"schema": {
				"type": "object", "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
				"required": ["order_id", "amount"],
			},
		},
		"legacy-export": {"risk": "medium", "approval_required": false, "schema": {"type": "object"}},
	},
	"prompts": {
		"support-agent": {
			"owner": "team-support", "risk": "medium", "default_version": "3",
			"versions": {"1": {"status": "retired"}, "3": {"status": "active"}, "4": {"status": "active"}},
		},
		"triage": {"owner": "team-support", "risk": "low", "default_version": "2", "versions": {"2": {"status": "active"}}},
	},
	"retention": {
		"*": {
			"chat-history": {"days": 90, "delete": "soft", "legal_hold": false},
			"voice": {"days": 7, "delete": "hard", "legal_hold": false},
		},
		"acme": {"chat-history": {"days": 30, "delete": "hard", "legal_hold": false}},
		"globex": {"chat-history": {"days": 30, "delete": "soft", "legal_hold": true}},
	},
	"rollouts": {
		"models": {"chat-default": {
			"id": "chat-default-2026-11", "baseline": "gpt-4o",
			"canary_percent": 20, "canary_below": "33333333", "sticky": "tenant", "kill_switch": false,
			"variants": [
				{"name": "gpt-4.1", "weight": 50, "from": "00000000", "to": "80000000"},
				{"name": "gpt-4.1-mini", "weight": 50, "from": "80000000", "to": "g"},
			],
			"overrides": {"umbrella": "gpt-4.1"},
		}},
		"prompts": {"support-agent": {
			"id": "support-agent-v4", "baseline": "3",
			"canary_percent": 0, "canary_below": "00000000", "sticky": "subject", "kill_switch": false,
			"variants": [{"name": "4", "weight": 100, "from": "00000000", "to": "g"}],
			"overrides": {"globex": "4"},
		}},
	},
}

# Every tenant in the chat-default canary (the compiler writes "g" for 100 %).
everyone_in_canary := json.patch(config, [
	{"op": "replace", "path": "/rollouts/models/chat-default/canary_percent", "value": 100},
	{"op": "replace", "path": "/rollouts/models/chat-default/canary_below", "value": "g"},
])

state := {
	"period": "2026-11",
	"spend": {
		"acme": {"ratio": 0.85, "models": {"gpt-4o": 0.5, "gpt-4.1": 1.0}, "features": {"chat": 0.91, "batch": 1.2}},
		"globex": {"ratio": 1.0, "models": {}, "features": {}},
		"umbrella": {"ratio": 0.1, "models": {"gpt-4.1": 0.2}, "features": {}},
	},
	"disabled": {"hooli": {"reason": "monthly hard cap reached", "since": "2026-11-20T10:00:00Z"}},
	"approvals": {"used": {"jti-used-once": now_s + 120}},
}

# A state bundle with no spend yet (the start of a period).
empty_state := {"period": "2026-11", "spend": {}, "disabled": {}}

# An Envoy CheckRequest as the ext_authz plugin turns it into input.
http_request(method, path, headers) := {
	"attributes": {"request": {"http": {"method": method, "path": path, "headers": headers}}},
	# As the plugin splits it: leading slashes trimmed, other empty segments kept.
	"parsed_path": split(trim_left(split(path, "?")[0], "/"), "/"),
	"parsed_query": {},
	"truncated_body": false,
}

with_body(request, body) := object.union(request, {"parsed_body": body})

bearer(token) := concat(" ", ["Bearer", token])

api_key_headers(tenant, api_key) := {"authorization": bearer(api_key), "x-nexus-tenant": tenant}

acme_headers := api_key_headers("acme", acme_api_key)

sign(key, claims) := io.jwt.encode_sign(
	{"alg": key.private.alg, "kid": key.private.kid, "typ": "JWT"},
	claims,
	key.private,
)

alice_claims := {
	"iss": acme_issuer, "aud": "nexus-gateway", "sub": "alice@acme.example",
	"nexus_tenant": "acme", "iat": now_s, "exp": now_s + 600,
}

alice_token := sign(keys.idp_rsa, alice_claims)

approval_claims(claims) := object.union(
	{
		"iss": "nexus-control-plane", "aud": "nexus-gateway", "iat": now_s, "exp": now_s + 300,
		"jti": "jti-fresh", "subject": "apikey:acme-prod-1",
	},
	claims,
)

approval_token(claims) := sign(keys.approval_ec, approval_claims(claims))

refund_arguments := {"order_id": "ord-1001", "amount": 25.5}

refund_approval := approval_token({
	"tenant": "acme", "tool": "payments-refund",
	"args_sha256": crypto.sha256(json.marshal(refund_arguments)),
})

# A record token as the chat store signs it: the record's tenant, id, data
# class and creation time, valid for a minute from now_s.
record_claims(tenant, record_id, data_class, created_s) := {
	"iss": record_issuer, "aud": "nexus-gateway", "iat": now_s, "exp": now_s + 60,
	"sub": record_id, "nexus_tenant": tenant, "data_class": data_class, "created_at": created_s,
}

record_token(tenant, record_id, data_class, created_s) := sign(
	keys.record_ec,
	record_claims(tenant, record_id, data_class, created_s),
)

# The header of a record of ``tenant`` with id ``record_id`` created ``days`` ago.
record_headers(tenant, record_id, data_class, days) := {"x-nexus-record-token": record_token(
	tenant, record_id, data_class,
	now_s - (days * 86400),
)}
