package extauthz

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
)

// candidatePolicy differs from testPolicy in every way a change can:
// acme is refused, tenant other allowed, a disabled tenant (from the
// shared state bundle) gets 429 instead of 403, and boom is a decision
// Envoy cannot be answered with.
const candidatePolicy = `package nexus.authz

tenant := input.attributes.request.http.headers["x-nexus-tenant"]

default decision := {"allowed": false, "http_status": 403, "headers": {"content-type": "application/json"}, "reasons": [{"rule": "candidate.denied"}]}

decision := {"allowed": true, "http_status": 200, "reasons": []} if tenant == "other"

decision := {"allowed": false, "http_status": 429, "reasons": [{"rule": "candidate.disabled"}]} if tenant in data.nexus_state.disabled

decision := {"allowed": "yes"} if tenant == "boom"
`

const (
	shadowKeyID     = "test-key"
	shadowSecret    = "shadow-test-secret"
	candidateRev    = "cand-0002"
	shadowResource  = "/bundles/shadow"
	shadowStateRoot = "nexus_state"
)

// bundleServer serves one bundle tarball at shadowResource, as the
// control plane would (ETag = revision).
type bundleServer struct {
	*httptest.Server
	body    atomic.Pointer[[]byte]
	fetches atomic.Int64
	gone    atomic.Bool // answer 404, as the control plane does once a shadow ends
}

func newBundleServer(t testing.TB, tarball []byte) *bundleServer {
	t.Helper()
	s := &bundleServer{}
	s.body.Store(&tarball)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != shadowResource || s.gone.Load() {
			http.NotFound(w, r)
			return
		}
		s.fetches.Add(1)
		w.Header().Set("Content-Type", "application/vnd.openpolicyagent.bundles")
		w.Header().Set("ETag", fmt.Sprintf("%x", len(*s.body.Load())))
		_, _ = w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

// candidateTarball is candidatePolicy as a bundle, signed with key (HS256)
// under kid, or unsigned when key is empty.
func candidateTarball(t testing.TB, key, kid string) []byte {
	t.Helper()
	roots := []string{"nexus"}
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: candidateRev, Roots: &roots},
		Data:     map[string]any{},
		Modules:  []bundle.ModuleFile{moduleFile(t, "/nexus/authz.rego", candidatePolicy)},
	}
	if key != "" {
		if err := b.GenerateSignature(bundle.NewSigningConfig(key, "HS256", ""), kid, false); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// shadowOPA is an in-process OPA holding testPolicy as bundle nexus and a
// state bundle disabling tenant zeta, with the control plane at url and
// the test key trusted.
func shadowOPA(t testing.TB, url string, reg prometheus.Registerer) *testOPA {
	t.Helper()
	policyRoots, stateRoots := []string{"nexus"}, []string{shadowStateRoot}
	policy := bundle.Bundle{Manifest: bundle.Manifest{Revision: testRevision, Roots: &policyRoots}, Data: map[string]any{},
		Modules: []bundle.ModuleFile{moduleFile(t, "/nexus/authz.rego", testPolicy)}}
	state := bundle.Bundle{Manifest: bundle.Manifest{Revision: "state-0001", Roots: &stateRoots},
		Data: map[string]any{shadowStateRoot: map[string]any{"disabled": []any{"zeta"}}}}
	config := fmt.Sprintf(`{"labels": {"region": "test-1"},
		"services": {"control-plane": {"url": %q}},
		"keys": {%q: {"algorithm": "HS256", "key": %q}}}`, url, shadowKeyID, shadowSecret)
	m, err := plugins.New([]byte(config), "test", inmem.New(),
		plugins.InitBundles(map[string]*bundle.Bundle{"nexus": &policy, "nexus-state": &state}),
		plugins.Logger(logging.NewNoOpLogger()),
		plugins.ConsoleLogger(logging.NewNoOpLogger()),
		plugins.WithPrometheusRegister(reg),
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &testOPA{manager: m}
}

func shadowPlugin(sample float64, queue int) string {
	return fmt.Sprintf(`{"addr": "127.0.0.1:0", "path": "nexus/authz/decision", "shadow": {
		"service": "control-plane", "resource": %q, "sample_percent": %v, "queue_size": %d,
		"shared_roots": [%q], "polling": {"min_delay_seconds": 1, "max_delay_seconds": 1}}}`,
		shadowResource, sample, queue, shadowStateRoot)
}

// heldShadow is a plugin whose shadow holds the candidate (activated
// directly, as the downloader's callback does) and whose worker is not
// running, so what was offered stays in the queue.
func heldShadow(t testing.TB, opa *testOPA, raw string) (*Plugin, *shadow) {
	t.Helper()
	p := opa.plugin(t, raw)
	s := newShadow(opa.manager, p.cfg.Shadow, p.cfg.query, p.decisions)
	b, err := bundle.NewReader(bytes.NewReader(candidateTarball(t, shadowSecret, shadowKeyID))).
		WithBundleVerificationConfig(s.cfg.Signing).Read()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.onUpdate(context.Background(), download.Update{Bundle: &b}); err != nil {
		t.Fatal(err)
	}
	if s.current.Load() == nil {
		t.Fatal("the signed candidate was not activated")
	}
	p.shadow.Store(s)
	return p, s
}

func tenantCheck(tenant string) *authv3.CheckRequest {
	return httpCheck("POST", "/v1/chat/completions", map[string]string{"x-nexus-tenant": tenant}, "")
}

// waitFor polls cond until it holds; the worker runs on its own goroutine,
// so the test waits for its effect, never for an amount of time.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestShadowCountsEachChangeWhileClientsGetTheActiveAnswer(t *testing.T) {
	srv := newBundleServer(t, candidateTarball(t, shadowSecret, shadowKeyID))
	reg := prometheus.NewRegistry()
	opa := shadowOPA(t, srv.URL, reg)
	p := opa.plugin(t, shadowPlugin(100, 64))
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background()) })
	s := p.shadow.Load()
	waitFor(t, "the candidate", func() bool { return s.current.Load() != nil })
	if got := testutil.ToFloat64(s.metrics.info.WithLabelValues(candidateRev)); got != 1 {
		t.Errorf("nexus_shadow_bundle_info{revision=%q} = %v, want 1", candidateRev, got)
	}

	wantActive := map[string]codes.Code{"acme": codes.OK, "other": codes.PermissionDenied, "zeta": codes.PermissionDenied, "nobody": codes.PermissionDenied, "boom": codes.PermissionDenied}
	for tenant, want := range wantActive {
		resp, err := p.Check(context.Background(), tenantCheck(tenant))
		if err != nil {
			t.Fatalf("%s: %v", tenant, err)
		}
		if got := codes.Code(resp.GetStatus().GetCode()); got != want {
			t.Errorf("%s: the client got %v, want the active bundle's %v", tenant, got, want)
		}
	}
	want := map[string]float64{changeAllowToDeny: 1, changeDenyToAllow: 1, changeStatusChanged: 1, changeUnchanged: 1, changeError: 1}
	count := func(change string) float64 {
		return testutil.ToFloat64(s.metrics.decisions.WithLabelValues(change, noValue, noValue))
	}
	waitFor(t, "five shadow outcomes", func() bool {
		total := 0.0
		for _, c := range allChanges {
			total += count(c)
		}
		return total == 5
	})
	for change, n := range want {
		if got := count(change); got != n {
			t.Errorf("nexus_shadow_decisions_total{change=%q} = %v, want %v", change, got, n)
		}
	}
}

func TestAShadowEndedByTheControlPlaneStopsTheEvaluation(t *testing.T) {
	srv := newBundleServer(t, candidateTarball(t, shadowSecret, shadowKeyID))
	opa := shadowOPA(t, srv.URL, prometheus.NewRegistry())
	p := opa.plugin(t, shadowPlugin(100, 64))
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background()) })
	s := p.shadow.Load()
	waitFor(t, "the candidate", func() bool { return s.current.Load() != nil })
	srv.gone.Store(true)
	waitFor(t, "the candidate dropped", func() bool { return s.current.Load() == nil })
	if n := testutil.CollectAndCount(s.metrics.info); n != 0 {
		t.Errorf("nexus_shadow_bundle_info has %d series after the shadow ended, want none", n)
	}
	if _, err := p.Check(context.Background(), tenantCheck("acme")); err != nil {
		t.Fatal(err)
	}
	if len(s.queue) != 0 {
		t.Errorf("%d samples queued after the shadow ended", len(s.queue))
	}
}

func TestAShadowBundleWhoseSignatureDoesNotVerifyIsRefusedAndNeverEvaluated(t *testing.T) {
	cases := map[string][]byte{
		"unsigned":    candidateTarball(t, "", ""),
		"wrong key":   candidateTarball(t, "another-secret", shadowKeyID),
		"unknown kid": candidateTarball(t, shadowSecret, "stranger"),
	}
	for name, tarball := range cases {
		t.Run(name, func(t *testing.T) {
			srv := newBundleServer(t, tarball)
			opa := shadowOPA(t, srv.URL, prometheus.NewRegistry())
			p := opa.plugin(t, shadowPlugin(100, 64))
			if err := p.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Stop(context.Background()) })
			s := p.shadow.Load()
			waitFor(t, "the refusal", func() bool {
				return testutil.ToFloat64(s.metrics.refused.WithLabelValues(refusedVerification)) >= 1
			})
			if s.current.Load() != nil {
				t.Fatal("a candidate whose signature does not verify was activated")
			}
			if n := testutil.CollectAndCount(s.metrics.info); n != 0 {
				t.Errorf("nexus_shadow_bundle_info has %d series, want none", n)
			}
			if _, err := p.Check(context.Background(), tenantCheck("acme")); err != nil {
				t.Fatal(err)
			}
			if len(s.queue) != 0 {
				t.Errorf("%d samples queued with no verified candidate", len(s.queue))
			}
		})
	}
}

func TestShadowSamplingZeroPercentEvaluatesNothing(t *testing.T) {
	opa := shadowOPA(t, "http://127.0.0.1:1", nil)
	p, s := heldShadow(t, opa, shadowPlugin(0, 64))
	for range 50 {
		if _, err := p.Check(context.Background(), tenantCheck("acme")); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.queue) != 0 {
		t.Errorf("%d samples offered at sample_percent 0", len(s.queue))
	}
}

func TestAFullShadowQueueDropsTheSampleAndTheCheckIsAnswered(t *testing.T) {
	opa := shadowOPA(t, "http://127.0.0.1:1", nil)
	p, s := heldShadow(t, opa, shadowPlugin(100, 2))
	for range 5 {
		resp, err := p.Check(context.Background(), tenantCheck("acme"))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus().GetCode() != int32(codes.OK) {
			t.Fatalf("status %v, want the active allow", resp.GetStatus())
		}
	}
	if len(s.queue) != 2 {
		t.Errorf("%d samples queued, want the queue's 2", len(s.queue))
	}
	if got := testutil.ToFloat64(s.metrics.dropped); got != 3 {
		t.Errorf("nexus_shadow_dropped_total = %v, want 3", got)
	}
}

func TestShadowChangesAreClassifiedFromEnvoysAnswers(t *testing.T) {
	allow := jsonValue(t, `{"allowed": true, "http_status": 200}`)
	deny := jsonValue(t, `{"allowed": false, "http_status": 403, "reasons": [{"rule": "r.denied"}]}`)
	limited := jsonValue(t, `{"allowed": false, "http_status": 429, "reasons": [{"rule": "r.limited"}]}`)
	otherRule := jsonValue(t, `{"allowed": false, "http_status": 403, "reasons": [{"rule": "r.other"}]}`)
	withHeader := jsonValue(t, `{"allowed": true, "http_status": 200, "headers": {"x-nexus-route-model": "small"}}`)
	cases := []struct {
		name           string
		active, chosen any
		err            error
		want           string
	}{
		{"same allow", allow, allow, nil, changeUnchanged},
		{"boolean allow against object allow", true, allow, nil, changeUnchanged},
		{"same denial, another rule", deny, otherRule, nil, changeUnchanged},
		{"allow to deny", allow, deny, nil, changeAllowToDeny},
		{"boolean deny to allow", false, allow, nil, changeDenyToAllow},
		{"deny to allow", deny, true, nil, changeDenyToAllow},
		{"403 to 429", deny, limited, nil, changeStatusChanged},
		{"an upstream header added", allow, withHeader, nil, changeHeadersChanged},
		{"candidate failed", allow, nil, errUndefined, changeError},
		{"candidate failed on a denial", deny, nil, errors.New("eval_conflict_error"), changeError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var cand verdict
			if c.err == nil {
				cand = verdictOf(c.chosen, testDecisionID)
			}
			if got := classify(verdictOf(c.active, testDecisionID), cand, c.err); got != c.want {
				t.Errorf("classify = %s, want %s", got, c.want)
			}
		})
	}
}

func TestShadowConfigRefusesWhatCouldNotBeVerifiedOrBounded(t *testing.T) {
	opa := shadowOPA(t, "http://127.0.0.1:1", nil)
	bad := map[string]string{
		"sample above 100": `{"service": "control-plane", "resource": "/r", "sample_percent": 101}`,
		"negative sample":  `{"service": "control-plane", "resource": "/r", "sample_percent": -1}`,
		"queue too large":  `{"service": "control-plane", "resource": "/r", "queue_size": 1000000}`,
		"unknown service":  `{"service": "elsewhere", "resource": "/r"}`,
		"no resource":      `{"service": "control-plane"}`,
		"unknown key":      `{"service": "control-plane", "resource": "/r", "signing": {"keyid": "stranger"}}`,
	}
	for name, block := range bad {
		t.Run(name, func(t *testing.T) {
			raw := `{"path": "nexus/authz/decision", "shadow": ` + block + `}`
			if _, err := (Factory{}).Validate(opa.manager, []byte(raw)); err == nil {
				t.Errorf("shadow block %s was accepted", block)
			}
		})
	}
	keyless := newTestOPA(t)
	raw := `{"path": "nexus/authz/decision", "shadow": {"service": "control-plane", "resource": "/r"}}`
	if _, err := (Factory{}).Validate(keyless.manager, []byte(raw)); err == nil {
		t.Error("a shadow block was accepted on an OPA with no keys to verify the candidate")
	}
}

func TestTheCandidateSeesTheStateBundleOnceItsRevisionChanges(t *testing.T) {
	opa := shadowOPA(t, "http://127.0.0.1:1", nil)
	_, s := heldShadow(t, opa, shadowPlugin(100, 64))
	ctx := context.Background()
	judge := func() float64 {
		smp := s.sampleOf(t, opa, tenantCheck("nobody"))
		s.judge(ctx, smp)
		return testutil.ToFloat64(s.metrics.decisions.WithLabelValues(changeStatusChanged, noValue, noValue))
	}
	if got := judge(); got != 0 {
		t.Fatalf("status_changed = %v before nobody is disabled", got)
	}
	// The state bundle's next revision disables tenant nobody: the candidate answers it
	// 429 (the active policy does not read the state, and still answers 403).
	txn := storage.NewTransactionOrDie(ctx, opa.manager.Store, storage.WriteParams)
	disabled := storage.MustParsePath("/" + shadowStateRoot + "/disabled")
	if err := opa.manager.Store.Write(ctx, txn, storage.ReplaceOp, disabled, []any{"zeta", "nobody"}); err != nil {
		t.Fatal(err)
	}
	roots := []string{shadowStateRoot}
	if err := bundle.WriteManifestToStore(ctx, opa.manager.Store, txn, "nexus-state", bundle.Manifest{Revision: "state-0002", Roots: &roots}); err != nil {
		t.Fatal(err)
	}
	if err := opa.manager.Store.Commit(ctx, txn); err != nil {
		t.Fatal(err)
	}
	if got := judge(); got != 1 {
		t.Errorf("status_changed = %v after the state bundle disabled nobody, want 1", got)
	}
}

// sampleOf is what Check offers for req, decided by the active policy.
func (s *shadow) sampleOf(t testing.TB, opa *testOPA, req *authv3.CheckRequest) sample {
	t.Helper()
	input, err := buildInput(req, defaultInputOptions)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pq, err := rego.New(rego.Query(s.query), rego.Compiler(opa.manager.GetCompiler()), rego.Store(opa.manager.Store)).PrepareForEval(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := pq.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil || len(rs) != 1 {
		t.Fatalf("active evaluation: %v %v", rs, err)
	}
	return sample{decisionID: testDecisionID, input: input, result: rs[0].Expressions[0].Value, ndb: builtins.NDBCache{}}
}
