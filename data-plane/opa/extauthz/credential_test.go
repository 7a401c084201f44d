package extauthz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

var authorizationCases = []struct {
	name, header, credential string // credential "" when there is no bearer
}{
	{"an API key", "Bearer nx_live_0123", "nx_live_0123"},
	{"a JWT, whole", "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"},
	{"the scheme in any case", "bEaReR nx_live_0123", "nx_live_0123"},
	{"white space around the credential", "Bearer \t nx_live_0123  ", "nx_live_0123"},
	{"white space inside is kept", "Bearer a b", "a b"},
	{"Unicode white space trimmed too", "Bearer \u00a0nx_live_0123\u2003", "nx_live_0123"},
	{"no credential after the scheme", "Bearer ", ""},
	{"only white space after the scheme", "Bearer    ", ""},
	{"the scheme alone", "Bearer", ""},
	{"another scheme", "Basic dXNlcjpwYXNz", ""},
	{"no space after the scheme", "Bearernx_live_0123", ""},
	{"a scheme with a non-ASCII look-alike", "Bеarer nx_live_0123", ""},
	{"no header", "", ""},
}

func TestTheBearerCredentialIsFingerprintedInTheInput(t *testing.T) {
	for _, tc := range authorizationCases {
		t.Run(tc.name, func(t *testing.T) {
			headers := map[string]string{}
			if tc.header != "" {
				headers["authorization"] = tc.header
			}
			nexus, ok := buildTestInput(t, httpCheck("POST", "/v1/chat/completions", headers, ""), false)["nexus"].(map[string]any)
			if !ok {
				t.Fatal("input.nexus is not an object")
			}
			got, present := nexus["credential_sha256"]
			switch {
			case tc.credential == "" && present:
				t.Errorf("credential_sha256 = %v without a bearer credential", got)
			case tc.credential != "" && got != sha256Hex(tc.credential):
				t.Errorf("credential_sha256 = %v, want sha256(%q)", got, tc.credential)
			}
		})
	}
}

// The plugin reads the credential exactly as the policy's identity rules
// do (rego/nexus/identity.rego, bearer_token): for every header, OPA
// evaluating those rules hashes the same credential, or finds none.
func TestTheFingerprintIsTheHashThePolicyComputes(t *testing.T) {
	query, err := rego.New(rego.Query(`
		authorization := input.authorization
		lower(substring(authorization, 0, 7)) == "bearer "
		token := trim_space(substring(authorization, 7, -1))
		token != ""
		hash := crypto.sha256(token)`)).PrepareForEval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range authorizationCases {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := query.Eval(context.Background(), rego.EvalInput(map[string]any{"authorization": tc.header}))
			if err != nil {
				t.Fatal(err)
			}
			policyHash := ""
			if len(rs) > 0 {
				policyHash = rs[0].Bindings["hash"].(string)
			}
			pluginHash := ""
			if credential, ok := bearerCredential(tc.header); ok {
				pluginHash = sha256Hex(credential)
			}
			if pluginHash != policyHash {
				t.Errorf("plugin %q, policy %q", pluginHash, policyHash)
			}
		})
	}
}
