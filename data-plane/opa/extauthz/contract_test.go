package extauthz

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/util"
)

// decisionSchemaFile is the one JSON Schema of the decision result
// (nexus_contract), which the Rego tests and pytest check too.
var decisionSchemaFile = filepath.Join("..", "..", "..", "contract", "nexus_contract",
	"schemas", "decision_result", "decision-result.schema.json")

// contractDecisions are the shapes the gateway policy returns: what the
// schema admits must be what this plugin answers Envoy with.
var contractDecisions = []struct {
	name     string
	decision string
	status   typev3.StatusCode
	allowed  bool
}{
	{
		name: "allowed, with upstream and response headers",
		decision: `{"allowed": true, "http_status": 200,
			"headers": {"x-nexus-route-model": "gpt-4o", "x-nexus-prompt-version": "3"},
			"response_headers_to_add": {"x-nexus-budget-warning": "tenant=85%"},
			"request_headers_to_remove": ["authorization", "x-nexus-approval"],
			"body": "", "reasons": []}`,
		allowed: true,
	},
	{
		name: "refused, with reasons and a JSON body",
		decision: `{"allowed": false, "http_status": 429,
			"headers": {"content-type": "application/json"},
			"response_headers_to_add": {}, "request_headers_to_remove": [],
			"body": "{\"error\":\"denied\",\"reasons\":[]}",
			"reasons": [{"rule": "nexus.budget.tenant_cap_reached", "message": "over the cap",
				"controls": ["SOC2:A1.1"]}]}`,
		status: typev3.StatusCode_TooManyRequests,
	},
}

func decisionSchema(t *testing.T) any {
	t.Helper()
	raw, err := os.ReadFile(decisionSchemaFile)
	if err != nil {
		t.Fatalf("the contract's decision schema: %v", err)
	}
	var schema any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	return schema
}

func matchesSchema(t *testing.T, decision, schema any) bool {
	t.Helper()
	rs, err := rego.New(
		rego.Query(`json.match_schema(input.decision, input.schema)`),
		rego.Input(map[string]any{"decision": decision, "schema": schema}),
	).Eval(context.Background())
	if err != nil || len(rs) != 1 {
		t.Fatalf("json.match_schema: %v", err)
	}
	verdict := rs[0].Expressions[0].Value.([]any)
	return verdict[0].(bool)
}

func TestTheContractsDecisionsAreAnsweredAsTheyMean(t *testing.T) {
	schema := decisionSchema(t)
	for _, tc := range contractDecisions {
		t.Run(tc.name, func(t *testing.T) {
			// Numbers as OPA hands them to the plugin (json.Number).
			var decision any
			if err := util.UnmarshalJSON([]byte(tc.decision), &decision); err != nil {
				t.Fatal(err)
			}
			if !matchesSchema(t, decision, schema) {
				t.Fatalf("the fixture is not a contract decision: %s", tc.decision)
			}
			resp, err := buildResponse(decision, testDecisionID, false)
			if err != nil {
				t.Fatalf("buildResponse: %v", err)
			}
			if ok := resp.GetOkResponse() != nil; ok != tc.allowed {
				t.Fatalf("allowed = %v, want %v", ok, tc.allowed)
			}
			if !tc.allowed && resp.GetDeniedResponse().GetStatus().GetCode() != tc.status {
				t.Fatalf("status %v, want %v", resp.GetDeniedResponse().GetStatus().GetCode(), tc.status)
			}
		})
	}
}

func TestTheSchemaRefusesWhatThePolicyMustNotReturn(t *testing.T) {
	schema := decisionSchema(t)
	for _, bad := range []string{
		`{"allowed": "yes"}`,
		`{"allowed": true, "http_status": 200, "headers": {}, "response_headers_to_add": {},
		  "request_headers_to_remove": [], "body": "", "reasons": [], "verdict": "allow"}`,
	} {
		var decision any
		if err := json.Unmarshal([]byte(bad), &decision); err != nil {
			t.Fatal(err)
		}
		if matchesSchema(t, decision, schema) {
			t.Fatalf("the schema admitted %s", bad)
		}
	}
}
