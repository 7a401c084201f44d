package extauthz

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/open-policy-agent/opa/v1/plugins/logs"
)

// shadowSchemaFile is the contract's shadow record schema, which pytest
// checks the intake against too.
var shadowSchemaFile = filepath.Join("..", "..", "..", "contract", "nexus_contract",
	"schemas", "shadow", "shadow.schema.json")

func shadowSchema(t *testing.T) any {
	t.Helper()
	raw, err := os.ReadFile(shadowSchemaFile)
	if err != nil {
		t.Fatalf("the contract's shadow schema: %v", err)
	}
	var schema any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	return schema
}

// withCapturedLog gives opa a decision log that keeps every event.
func withCapturedLog(t *testing.T, opa *testOPA) {
	t.Helper()
	opa.log = &capturedLog{}
	opa.manager.Register("captured_log", opa.log)
	cfg, err := logs.ParseConfig([]byte(`{"plugin": "captured_log"}`), nil, []string{"captured_log"})
	if err != nil {
		t.Fatal(err)
	}
	opa.manager.Register(logs.Name, logs.New(cfg, opa.manager))
}

// byPath splits the captured events: decision ids at the decision path,
// shadow results (as the intake reads them: JSON) by the decision they name.
func (c *capturedLog) byPath(t *testing.T) (map[string]bool, map[string]map[string]any) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	decisions := map[string]bool{}
	shadows := map[string]map[string]any{}
	for _, event := range c.events {
		switch event.Path {
		case "nexus/authz/decision":
			decisions[event.DecisionID] = true
		case ShadowPath:
			raw, err := json.Marshal(*event.Result)
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := json.Unmarshal(raw, &doc); err != nil {
				t.Fatal(err)
			}
			if event.Labels["region"] != "test-1" {
				t.Errorf("labels %v: a shadow record carries the enforcer's labels", event.Labels)
			}
			shadows[doc["decision_id"].(string)] = doc
		}
	}
	return decisions, shadows
}

func TestEveryShadowOutcomeIsADecisionLogRecordOfTheContract(t *testing.T) {
	srv := newBundleServer(t, candidateTarball(t, shadowSecret, shadowKeyID))
	opa := shadowOPA(t, srv.URL, prometheus.NewRegistry())
	withCapturedLog(t, opa)
	p := opa.plugin(t, shadowPlugin(100, 64))
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background()) })
	s := p.shadow.Load()
	waitFor(t, "the candidate", func() bool { return s.current.Load() != nil })
	for _, tenant := range []string{"acme", "other", "zeta", "nobody", "boom"} {
		if _, err := p.Check(context.Background(), tenantCheck(tenant)); err != nil {
			t.Fatalf("%s: %v", tenant, err)
		}
	}
	waitFor(t, "five shadow records", func() bool {
		_, shadows := opa.log.byPath(t)
		return len(shadows) == 5
	})
	decisions, shadows := opa.log.byPath(t)
	schema := shadowSchema(t)
	changes := map[string]int{}
	for id, doc := range shadows {
		if !decisions[id] {
			t.Errorf("shadow record for %s, which is no decision logged", id)
		}
		if !matchesSchema(t, doc, schema) {
			t.Errorf("the shadow record is not the contract's: %v", doc)
		}
		if doc["candidate_revision"] != candidateRev || doc["active_revision"] != testRevision {
			t.Errorf("revisions %v / %v, want %s / %s", doc["candidate_revision"], doc["active_revision"], candidateRev, testRevision)
		}
		changes[doc["change"].(string)]++
		if doc["change"] == changeError {
			if _, has := doc["candidate"]; has || doc["error"] != CodeResult {
				t.Errorf("a failed candidate's record: %v, want its error code and no answer", doc)
			}
		}
	}
	for _, c := range []string{changeUnchanged, changeAllowToDeny, changeDenyToAllow, changeStatusChanged, changeError} {
		if changes[c] != 1 {
			t.Errorf("%d records of change %s, want 1 (unchanged ones too: a gate needs the denominator)", changes[c], c)
		}
	}
}

func TestTheShadowSchemaRefusesWhatThePluginMustNotWrite(t *testing.T) {
	schema := shadowSchema(t)
	verdict := `{"allowed": true, "http_status": 200, "reasons": []}`
	for _, bad := range []string{
		`{"decision_id": "d", "candidate_revision": "c", "active_revision": "a", "change": "widened", "active": ` + verdict + `, "eval_ns": 1}`,
		`{"decision_id": "d", "candidate_revision": "c", "active_revision": "a", "change": "unchanged", "active": ` + verdict + `}`,
		`{"decision_id": "d", "candidate_revision": "c", "active_revision": "a", "change": "unchanged", "active": ` + verdict + `, "eval_ns": 1, "input": {}}`,
		`{"decision_id": "d", "candidate_revision": "c", "active_revision": "a", "change": "unchanged", "active": {"allowed": true, "http_status": 200, "reasons": [{"rule": "r", "controls": [], "message": "m"}]}, "eval_ns": 1}`,
	} {
		var doc any
		if err := json.Unmarshal([]byte(bad), &doc); err != nil {
			t.Fatal(err)
		}
		if matchesSchema(t, doc, schema) {
			t.Fatalf("the schema admitted %s", bad)
		}
	}
}
