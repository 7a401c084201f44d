package extauthz

import (
	"context"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
)

func testLimiter(maxInFlight int, maxWait time.Duration) *limiter {
	return newLimiter(admission{maxInFlight: maxInFlight, maxWait: maxWait, status: 503, retryAfter: 1})
}

func mustAdmit(t *testing.T, l *limiter, ctx context.Context) func() {
	t.Helper()
	release, _, shed := l.admit(ctx)
	if shed != "" || release == nil {
		t.Fatalf("shed (%q) with %d of %d slots taken", shed, len(l.slots), cap(l.slots))
	}
	return release
}

func TestTheLimiterAdmitsUpToMaxInFlightAndShedsTheRest(t *testing.T) {
	l := testLimiter(2, 0)
	ctx := context.Background()
	first := mustAdmit(t, l, ctx)
	mustAdmit(t, l, ctx)
	if release, _, shed := l.admit(ctx); shed != shedQueueTimeout || release != nil {
		t.Fatalf("a third Check: shed %q", shed)
	}
	first()
	mustAdmit(t, l, ctx)
}

func TestAWaitingCheckIsAdmittedWhenASlotFrees(t *testing.T) {
	l := testLimiter(1, time.Hour)
	ctx := context.Background()
	release := mustAdmit(t, l, ctx)
	admitted := make(chan string)
	go func() {
		r, _, shed := l.admit(ctx)
		if r != nil {
			r()
		}
		admitted <- shed
	}()
	release()
	if shed := <-admitted; shed != "" {
		t.Errorf("the waiting Check was shed (%q) although a slot freed", shed)
	}
}

func TestAWaitingCheckIsShedWhenItsWaitIsOver(t *testing.T) {
	l := testLimiter(1, time.Millisecond)
	mustAdmit(t, l, context.Background())
	if _, _, shed := l.admit(context.Background()); shed != shedQueueTimeout {
		t.Errorf("shed %q, want %q", shed, shedQueueTimeout)
	}
}

func TestAWaitingCheckIsShedWhenEnvoyGivesUp(t *testing.T) {
	l := testLimiter(1, time.Hour)
	mustAdmit(t, l, context.Background())

	cancelled, cancel := context.WithCancel(context.Background())
	done := make(chan string)
	go func() {
		_, _, shed := l.admit(cancelled)
		done <- shed
	}()
	cancel()
	if shed := <-done; shed != shedCancelled {
		t.Errorf("cancelled while waiting: shed %q, want %q", shed, shedCancelled)
	}

	expired, cancelExpired := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancelExpired()
	if _, _, shed := l.admit(expired); shed != shedDeadline {
		t.Errorf("deadline passed: shed %q, want %q", shed, shedDeadline)
	}
}

// A Check whose caller is gone is not evaluated even when a slot is free,
// and gives its slot back.
func TestAnAbandonedCheckIsShedAndFreesItsSlot(t *testing.T) {
	for name, l := range map[string]*limiter{"limited": testLimiter(1, 0), "unlimited": testLimiter(0, 0)} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if release, _, shed := l.admit(ctx); shed != shedCancelled || release != nil {
				t.Errorf("shed %q", shed)
			}
			if len(l.slots) != 0 {
				t.Error("the shed Check kept its slot")
			}
		})
	}
}

func TestNoLimitAdmitsEveryCheck(t *testing.T) {
	l := testLimiter(0, 0)
	for range 1000 {
		mustAdmit(t, l, context.Background())
	}
}

func intp(n int) *int { return &n }

func TestAdmissionConfiguration(t *testing.T) {
	defaults, err := (*AdmissionConfig)(nil).resolve()
	if err != nil {
		t.Fatal(err)
	}
	want := admission{maxInFlight: defaultInFlightPerCPU * runtime.GOMAXPROCS(0), maxWait: defaultMaxQueueWait, status: 503, retryAfter: 1}
	if defaults != want {
		t.Errorf("defaults %+v, want %+v", defaults, want)
	}
	got, err := (&AdmissionConfig{MaxInFlight: intp(0), MaxQueueWaitMS: intp(0), Status: 429, RetryAfterSeconds: intp(0)}).resolve()
	if err != nil || got != (admission{status: 429}) {
		t.Errorf("zeros: %+v %v", got, err)
	}
	for _, bad := range []AdmissionConfig{
		{MaxInFlight: intp(-1)}, {MaxQueueWaitMS: intp(-5)}, {Status: 500}, {Status: 200}, {RetryAfterSeconds: intp(-1)},
	} {
		if _, err := bad.resolve(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	cfg, err := Factory{}.Validate(nil, []byte(`{"admission": {"max-in-flight": 3, "max-queue-wait-ms": 20, "status": 429, "retry-after-seconds": 2}}`))
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.(*Config).admission; a != (admission{maxInFlight: 3, maxWait: 20 * time.Millisecond, status: 429, retryAfter: 2}) {
		t.Errorf("from the configuration block: %+v", a)
	}
	if _, err := (Factory{}).Validate(nil, []byte(`{"admission": {"status": 418}}`)); err == nil {
		t.Error("admission.status 418 accepted")
	}
}

// Past max-in-flight a Check is answered at once with the configured
// status, retry-after and reason, without the policy being evaluated, and
// is logged as a decision (shed: its reason); the metrics count it.
func TestAShedCheckIsAnsweredAtOnceAndLoggedAsADecision(t *testing.T) {
	registry := prometheus.NewRegistry()
	setup := testSetup()
	setup.registry = registry
	opa := newOPA(t, setup)
	p := opa.plugin(t, `{"path": "nexus/authz/decision", "admission": {"max-in-flight": 1, "max-queue-wait-ms": 0, "status": 429, "retry-after-seconds": 7}}`)
	ctx := context.Background()

	hold := mustAdmit(t, p.limiter.Load(), ctx) // the one slot, as a Check being evaluated would
	resp, err := p.Check(ctx, acmeCheck())
	if err != nil {
		t.Fatal(err)
	}
	denied := resp.GetDeniedResponse()
	if resp.GetStatus().GetCode() != int32(codes.PermissionDenied) || denied.GetStatus().GetCode() != 429 {
		t.Fatalf("answer %s, want a 429", protojson.Format(resp))
	}
	headers := map[string]string{}
	for _, h := range denied.GetHeaders() {
		headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	if headers["retry-after"] != "7" || headers["content-type"] != "application/json" {
		t.Errorf("headers %v", headers)
	}
	wantBody := `{"error":"denied","reasons":[{"controls":["SOC2:A1.1","ISO27001:A.8.6"],` +
		`"message":"the enforcer is over capacity: every evaluation slot is taken","rule":"nexus.admission"}]}`
	if denied.GetBody() != wantBody {
		t.Errorf("body %s\nwant %s", denied.GetBody(), wantBody)
	}

	event := opa.log.only(t)
	if event.DecisionID != decisionIDOf(t, resp) {
		t.Error("logged under another decision id")
	}
	wantResult := `{"allowed":false,"http_status":429,"reasons":[{"controls":["SOC2:A1.1","ISO27001:A.8.6"],` +
		`"message":"the enforcer is over capacity: every evaluation slot is taken","rule":"nexus.admission"}],"shed":"queue_timeout"}`
	if got := mustJSON(t, *event.Result); got != wantResult {
		t.Errorf("logged result %s\nwant %s", got, wantResult)
	}
	if event.Error != nil || len(event.RuleLabels) != 0 {
		t.Errorf("logged error %v, rule_labels %v: the policy must not have been asked", event.Error, event.RuleLabels)
	}
	input := mustJSON(t, *event.Input)
	if !strings.Contains(input, `"x-nexus-tenant":"acme"`) || !strings.Contains(input, `"parsed_path":["v1","chat","completions"]`) {
		t.Errorf("logged input %s", input)
	}
	// OPA's mask lists what it erased: a parsed_body only if there was one.
	if slices.Contains(event.Erased, "/input/parsed_body") {
		t.Errorf("the body of a shed Check was parsed (erased: %v)", event.Erased)
	}

	hold()
	if resp, err := p.Check(ctx, acmeCheck()); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("with the slot free: %v %v", resp, err)
	}
	if erased := opa.log.only(t).Erased; !slices.Contains(erased, "/input/parsed_body") {
		t.Errorf("an admitted Check's body was not parsed (erased: %v)", erased)
	}

	m := p.metrics
	for name, got := range map[string]float64{
		"shed_total{queue_timeout}": testutil.ToFloat64(m.shed.WithLabelValues(shedQueueTimeout)),
		"checks_total{shed}":        testutil.ToFloat64(m.checks.WithLabelValues(outcomeShed)),
		"checks_total{allowed}":     testutil.ToFloat64(m.checks.WithLabelValues(outcomeAllowed)),
	} {
		if got != 1 {
			t.Errorf("%s = %v, want 1", name, got)
		}
	}
	if got := testutil.ToFloat64(m.inFlight); got != 0 {
		t.Errorf("in_flight = %v after every Check was answered", got)
	}
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	registered := map[string]bool{}
	for _, f := range families {
		registered[f.GetName()] = true
	}
	for _, name := range []string{"nexus_extauthz_in_flight", "nexus_extauthz_queue_delay_seconds", "nexus_extauthz_shed_total", "nexus_extauthz_checks_total"} {
		if !registered[name] {
			t.Errorf("%s is not in OPA's registry", name)
		}
	}
}

// Many Checks at once against a small limit: each is answered (admitted
// after a wait or shed), every one is logged, and the counts add up.
func TestConcurrentChecksAreEachAdmittedOrShedAndAllLogged(t *testing.T) {
	opa := newTestOPA(t)
	opa.log.discard = true
	p := opa.plugin(t, `{"path": "nexus/authz/decision", "admission": {"max-in-flight": 2, "max-queue-wait-ms": 60000}}`)
	const checks = 64
	var wg sync.WaitGroup
	errs := make(chan error, checks)
	for range checks {
		wg.Go(func() {
			if _, err := p.Check(context.Background(), acmeCheck()); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	allowed := testutil.ToFloat64(p.metrics.checks.WithLabelValues(outcomeAllowed))
	shed := testutil.ToFloat64(p.metrics.checks.WithLabelValues(outcomeShed))
	if allowed+shed != checks || opa.log.total() != checks {
		t.Errorf("allowed %v + shed %v, logged %d, want %d", allowed, shed, opa.log.total(), checks)
	}
	if shed != 0 {
		t.Errorf("%v Checks shed although each could wait a minute", shed)
	}
	if got := testutil.ToFloat64(p.metrics.inFlight); got != 0 {
		t.Errorf("in_flight = %v", got)
	}
}

// slowPolicy takes far longer than the Check's deadline.
const slowPolicy = `package nexus.slow

decision := {"allowed": true} if count([x | some x in numbers.range(1, 50000000)]) > 0
`

func TestADecisionEnvoyGaveUpOnIsLoggedAsAbandonedNotMade(t *testing.T) {
	setup := testSetup()
	setup.modules["/nexus/slow.rego"] = slowPolicy
	opa := newOPA(t, setup)
	p := opa.plugin(t, `{"addr": "127.0.0.1:0", "path": "nexus/slow/decision"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()

	resp, err := p.Check(ctx, acmeCheck())
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if resp.GetStatus().GetCode() == 0 {
		t.Fatal("allowed a request whose caller had given up")
	}
	event := opa.log.only(t)
	decision := (*event.Result).(map[string]any)
	if decision["allowed"] != false || decision["shed"] != shedAbandoned {
		t.Fatalf("logged %v, want a refusal shed as %q", decision, shedAbandoned)
	}
	reasons := decision["reasons"].([]any)
	if msg := reasons[0].(map[string]any)["message"].(string); !strings.Contains(msg, "gave up") {
		t.Errorf("reason %q", msg)
	}
}
