package extauthz

import (
	"context"
	"strconv"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// reservingPolicy allows every request and names a reservation of 100
// micro-USD on acme's tenant scope, with what is left and as_of taken from
// the request, so one test can play several state bundles.
const reservingPolicy = `package nexus.authz

headers := input.attributes.request.http.headers

decision := {
	"allowed": true,
	"headers": {},
	"reservation": {
		"as_of": to_number(headers["x-as-of"]),
		"worst_case": 100,
		"scopes": {"tenant \"acme\"": to_number(headers["x-left"])},
	},
}
`

func startReservingEnforcer(t *testing.T, config string) *grpcEnforcer {
	t.Helper()
	setup := testSetup()
	setup.modules["/nexus/authz.rego"] = reservingPolicy
	opa := newOPA(t, setup)
	p := opa.plugin(t, config)
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(ctx) })
	conn, err := grpc.NewClient(p.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &grpcEnforcer{opa: opa, p: p, authz: authv3.NewAuthorizationClient(conn), als: accesslogv3.NewAccessLogServiceClient(conn)}
}

func (e *grpcEnforcer) chat(t *testing.T, requestID string, asOf time.Time, left int) *authv3.CheckResponse {
	t.Helper()
	req := acmeCheck()
	h := req.Attributes.Request.Http.Headers
	h[requestIDHeader], h["x-as-of"], h["x-left"] = requestID, strconv.FormatInt(asOf.UnixMilli(), 10), strconv.Itoa(left)
	resp, err := e.authz.Check(context.Background(), req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

func TestAChatBeyondWhatIsHeldIsRefusedLoggedAndReleasedOnceCounted(t *testing.T) {
	e := startReservingEnforcer(t, `{"addr": "127.0.0.1:0", "path": "nexus/authz/decision"}`)
	published := time.Now()
	first := e.chat(t, "r1", published, 250)
	second := e.chat(t, "r2", published, 250)
	if first.GetOkResponse() == nil || second.GetOkResponse() == nil {
		t.Fatal("two worst cases of 100 fit in 250")
	}
	e.opa.log.events = nil

	third := e.chat(t, "r3", published, 250)
	denied := third.GetDeniedResponse()
	if denied.GetStatus().GetCode() != 429 {
		t.Fatalf("the third: %v", third)
	}
	headers := map[string]string{}
	for _, h := range denied.GetHeaders() {
		headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	if headers["retry-after"] != "3" {
		t.Errorf("headers %v", headers)
	}
	wantBody := `{"error":"denied","reasons":[{"controls":["SOC2:A1.1","ISO27001:A.8.6","ISO42001:A.4.5"],` +
		`"message":"the worst-case cost of this request ($0.000100) and what requests in flight already hold in the budget of tenant \"acme\" ($0.000200) exceed what it had left as last published ($0.000250)",` +
		`"rule":"nexus.cost.reservation_exceeds_remaining"}]}`
	if denied.GetBody() != wantBody {
		t.Errorf("body %s\nwant %s", denied.GetBody(), wantBody)
	}
	event := e.opa.log.only(t)
	wantResult := `{"allowed":false,"http_status":429,"reasons":[{"controls":["SOC2:A1.1","ISO27001:A.8.6","ISO42001:A.4.5"],` +
		`"message":"the worst-case cost of this request ($0.000100) and what requests in flight already hold in the budget of tenant \"acme\" ($0.000200) exceed what it had left as last published ($0.000250)",` +
		`"rule":"nexus.cost.reservation_exceeds_remaining"}],` +
		`"reservation":{"held":200,"left":250,"refused":"exceeds_remaining","scope":"tenant \"acme\"","worst_case":100}}`
	if got := mustJSON(t, *event.Result); got != wantResult {
		t.Errorf("logged %s\nwant %s", got, wantResult)
	}
	if event.DecisionID != decisionIDOf(t, third) {
		t.Error("logged under another decision id")
	}
	if got := testutil.ToFloat64(e.p.metrics.checks.WithLabelValues(outcomeReservation)); got != 1 {
		t.Errorf("checks_total{reservation_refused} = %v", got)
	}

	// Envoy logs the first request's end; a state read more than the
	// grace after it counts its spend (here it spent 50 of its 100).
	e.send(t, logEntry("r1", 200, "via_upstream", decisionIDOf(t, first), true))
	later := time.Now().Add(defaultReservationGrace + time.Second)
	if resp := e.chat(t, "r4", later, 200); resp.GetOkResponse() == nil {
		t.Fatalf("the first's hold was not released by a newer state: %v", resp)
	}
	if held := e.p.reservations.Load().heldIn(`tenant "acme"`); held != 200 {
		t.Errorf("held %d, want 200 (the second and the fourth)", held)
	}
	if got := testutil.ToFloat64(e.p.metrics.reservations); got != 2 {
		t.Errorf("nexus_extauthz_budget_reservations = %v, want 2", got)
	}
}

func TestReservationsOffAdmitWhatThePolicyAllows(t *testing.T) {
	e := startReservingEnforcer(t, `{"addr": "127.0.0.1:0", "path": "nexus/authz/decision", "reservations": {"enabled": false}}`)
	published := time.Now()
	for i := range 5 {
		if resp := e.chat(t, strconv.Itoa(i), published, 150); resp.GetOkResponse() == nil {
			t.Fatalf("chat %d with reservations off: %v", i, resp)
		}
	}
	if e.p.reservations.Load() != nil {
		t.Error("a table with reservations off")
	}
}
