package extauthz

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// decisionMetricsFile is the contract the SLO rules, alerts and
// dashboards read the decision metrics by (nexus_contract).
var decisionMetricsFile = filepath.Join("..", "..", "..", "contract", "nexus_contract",
	"schemas", "decision_metrics", "decision-metrics.json")

// labelledPolicy labels its decisions as the gateway library does
// (rego/nexus/capability.rego), and a labels document for the requests
// it does not decide.
const labelledPolicy = `package nexus.authz

labels := {"route": "chat.completions", "tool": "none", "capability": "chat"} if {
	input.parsed_path == ["v1", "chat", "completions"]
} else := {"route": "none", "tool": "none", "capability": input.parsed_path[1]} if {
	input.parsed_path[0] == "other"
}

decision := {
	"allowed": input.attributes.request.http.headers["x-nexus-tenant"] == "acme",
	"http_status": 403,
	"headers": {},
	"reasons": [{"rule": "test.not_acme", "message": "not acme", "controls": ["SOC2:CC6.1"]} |
		input.attributes.request.http.headers["x-nexus-tenant"] != "acme"],
	"labels": labels,
}
`

func labelledOPA(t *testing.T, raw string) (*Plugin, *prometheus.Registry) {
	t.Helper()
	registry := prometheus.NewRegistry()
	setup := testSetup()
	setup.modules = map[string]string{"/nexus/authz.rego": labelledPolicy}
	setup.registry = registry
	setup.noLog = true
	return newOPA(t, setup).plugin(t, raw), registry
}

func decisions(t *testing.T, p *Plugin, outcome, route, tool, capability, reason string) float64 {
	t.Helper()
	return testutil.ToFloat64(p.decisions.decisions.WithLabelValues(outcome, route, tool, capability, reason))
}

func TestTheDecisionMetricsAreTheContractsNamesBucketsAndOutcomes(t *testing.T) {
	raw, err := os.ReadFile(decisionMetricsFile)
	if err != nil {
		t.Fatal(err)
	}
	var contract struct {
		Decisions  string    `json:"decisions_metric"`
		Duration   string    `json:"duration_metric"`
		Tenants    string    `json:"tenant_decisions_metric"`
		Buckets    []float64 `json:"duration_buckets_s"`
		Outcomes   []string  `json:"outcomes"`
		Unanswered []string  `json:"unanswered_outcomes"`
		NoValue    string    `json:"no_value"`
		Overflow   string    `json:"overflow_value"`
		MaxValues  int       `json:"max_values_per_label"`
	}
	if err := json.Unmarshal(raw, &contract); err != nil {
		t.Fatal(err)
	}
	if contract.Decisions != decisionsMetric || contract.Duration != durationMetric || contract.Tenants != tenantDecisionsMetric {
		t.Errorf("metric names %q %q %q, the plugin exports %q %q %q", contract.Decisions, contract.Duration,
			contract.Tenants, decisionsMetric, durationMetric, tenantDecisionsMetric)
	}
	if !slices.Equal(contract.Buckets, durationBuckets) {
		t.Errorf("buckets %v, the plugin's %v", contract.Buckets, durationBuckets)
	}
	if !slices.Equal(contract.Outcomes, allOutcomes) {
		t.Errorf("outcomes %v, the plugin's %v", contract.Outcomes, allOutcomes)
	}
	if !slices.Equal(contract.Unanswered, []string{outcomeShed, outcomeError}) {
		t.Errorf("unanswered outcomes %v", contract.Unanswered)
	}
	if contract.NoValue != noValue || contract.Overflow != overflowValue || contract.MaxValues != maxLabelValues {
		t.Errorf("label rules %q %q %d", contract.NoValue, contract.Overflow, contract.MaxValues)
	}
}

func TestADecisionIsCountedByItsLabelsOutcomeAndDecidingRule(t *testing.T) {
	p, registry := labelledOPA(t, `{"path": "nexus/authz/decision", "metric-tenants": ["acme"]}`)
	ctx := context.Background()
	for range 3 {
		if _, err := p.Check(ctx, acmeCheck()); err != nil {
			t.Fatal(err)
		}
	}
	other := httpCheck("POST", "/v1/chat/completions", map[string]string{"x-nexus-tenant": "globex"}, "")
	if _, err := p.Check(ctx, other); err != nil {
		t.Fatal(err)
	}
	if got := decisions(t, p, outcomeAllowed, "chat.completions", "none", "chat", noValue); got != 3 {
		t.Errorf("allowed chat decisions %v, want 3", got)
	}
	if got := decisions(t, p, outcomeDenied, "chat.completions", "none", "chat", "test.not_acme"); got != 1 {
		t.Errorf("denied chat decisions %v, want 1 labelled by the deciding rule", got)
	}
	if got := testutil.ToFloat64(p.decisions.tenants.WithLabelValues("acme", outcomeAllowed)); got != 3 {
		t.Errorf("acme's allowed decisions %v, want 3", got)
	}
	if got := testutil.CollectAndCount(p.decisions.tenants); got != len(allOutcomes) {
		t.Errorf("%d tenant series, want acme's %d only (globex is not in metric-tenants)", got, len(allOutcomes))
	}
	count, err := testutil.GatherAndCount(registry, durationMetric)
	if err != nil || count != 2 {
		t.Errorf("%d duration series (%v), want chat/allowed and chat/denied", count, err)
	}
}

// A shed request is not evaluated, yet an availability objective must
// count it against its capability: the labels-path document names it.
func TestAShedCheckIsLabelledByTheLabelsDocument(t *testing.T) {
	p, _ := labelledOPA(t, `{"path": "nexus/authz/decision", "labels-path": "nexus/authz/labels",
		"admission": {"max-in-flight": 1, "max-queue-wait-ms": 0}}`)
	ctx := context.Background()
	hold := mustAdmit(t, p.limiter.Load(), ctx)
	defer hold()
	if _, err := p.Check(ctx, acmeCheck()); err != nil {
		t.Fatal(err)
	}
	if got := decisions(t, p, outcomeShed, "chat.completions", "none", "chat", shedQueueTimeout); got != 1 {
		t.Errorf("shed chat decisions %v, want 1 labelled chat with the shed reason", got)
	}
}

// Under overload a shed Check must stay cheap: the labels of a method and
// path are evaluated once per policy, and a new policy is asked again.
func TestShedLabelsAreKeptPerMethodAndPathUntilThePolicyChanges(t *testing.T) {
	p, _ := labelledOPA(t, `{"path": "nexus/authz/decision", "labels-path": "nexus/authz/labels",
		"admission": {"max-in-flight": 1, "max-queue-wait-ms": 0}}`)
	ctx := context.Background()
	hold := mustAdmit(t, p.limiter.Load(), ctx)
	defer hold()
	for range 3 {
		if _, err := p.Check(ctx, acmeCheck()); err != nil {
			t.Fatal(err)
		}
	}
	if got := decisions(t, p, outcomeShed, "chat.completions", "none", "chat", shedQueueTimeout); got != 3 {
		t.Errorf("shed chat decisions %v, want 3", got)
	}
	if l, ok := p.labelsCache.get("POST /v1/chat/completions"); !ok || l.capability != "chat" {
		t.Errorf("cached labels %+v (%v)", l, ok)
	}
	p.compilerUpdated(nil)
	if _, ok := p.labelsCache.get("POST /v1/chat/completions"); ok {
		t.Error("labels of the previous policy kept after it changed")
	}
}

func TestWithoutALabelsDocumentAShedCheckIsLabelledNone(t *testing.T) {
	p, _ := labelledOPA(t, `{"path": "nexus/authz/decision", "admission": {"max-in-flight": 1, "max-queue-wait-ms": 0}}`)
	ctx := context.Background()
	hold := mustAdmit(t, p.limiter.Load(), ctx)
	defer hold()
	if _, err := p.Check(ctx, acmeCheck()); err != nil {
		t.Fatal(err)
	}
	if got := decisions(t, p, outcomeShed, noValue, noValue, noValue, shedQueueTimeout); got != 1 {
		t.Errorf("shed decisions labelled none %v, want 1", got)
	}
}

// Whatever a policy (or a client, through a policy defect) puts in the
// labels, each label keeps a bounded set of values.
func TestLabelValuesAreBoundedAndMalformedOnesCountedAsOther(t *testing.T) {
	p, registry := labelledOPA(t, `{"path": "nexus/authz/decision"}`)
	ctx := context.Background()
	for i := range maxLabelValues + 10 {
		req := httpCheck("GET", fmt.Sprintf("/other/cap-%03d", i), map[string]string{"x-nexus-tenant": "acme"}, "")
		if _, err := p.Check(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	bad := httpCheck("GET", "/other/Bad%20Value", map[string]string{"x-nexus-tenant": "acme"}, "")
	if _, err := p.Check(ctx, bad); err != nil {
		t.Fatal(err)
	}
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range families {
		if f.GetName() != decisionsMetric {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "capability" {
					seen[l.GetValue()] = true
				}
			}
		}
	}
	if len(seen) != maxLabelValues+1 || !seen[overflowValue] {
		t.Errorf("%d capability values (other: %v), want %d and other", len(seen), seen[overflowValue], maxLabelValues)
	}
	for v := range seen {
		if strings.ContainsAny(v, " \n") {
			t.Errorf("malformed capability %q exported", v)
		}
	}
	if got := decisions(t, p, outcomeAllowed, noValue, noValue, overflowValue, noValue); got != 11 {
		t.Errorf("%v decisions counted as other, want 10 past the bound and the malformed one", got)
	}
}

func TestMetricTenantsAndLabelsPathAreValidated(t *testing.T) {
	many := make([]string, maxMetricTenants+1)
	for i := range many {
		many[i] = fmt.Sprintf("%q", fmt.Sprintf("t%d", i))
	}
	for _, raw := range []string{
		`{"metric-tenants": [` + strings.Join(many, ",") + `]}`,
		`{"metric-tenants": ["Not A Tenant"]}`,
		`{"labels-path": "%zz"}`,
	} {
		if _, err := (Factory{}).Validate(nil, []byte(raw)); err == nil {
			t.Errorf("%s accepted", raw)
		}
	}
}
