package extauthz

import (
	"context"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/topdown"
)

const decisionPlugin = `{"addr": "127.0.0.1:0", "path": "nexus/authz/decision"}`

func acmeCheck() *authv3.CheckRequest {
	return httpCheck("POST", "/v1/chat/completions?debug=1", map[string]string{
		"content-type":   "application/json",
		"authorization":  "Bearer nx_secret",
		"x-nexus-tenant": "acme",
	}, `{"model":"gpt-4o"}`)
}

func decisionIDOf(t testing.TB, resp *authv3.CheckResponse) string {
	t.Helper()
	id := resp.GetDynamicMetadata().GetFields()[decisionIDKey].GetStringValue()
	if _, err := uuid.Parse(id); err != nil {
		t.Fatalf("dynamic metadata decision_id %q is not a UUID", id)
	}
	return id
}

func TestAnAllowedCheckIsAnsweredAndLoggedUnderOneDecisionID(t *testing.T) {
	opa := newTestOPA(t)
	p := opa.plugin(t, decisionPlugin)

	resp, err := p.Check(context.Background(), acmeCheck())
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if resp.GetStatus().GetCode() != int32(codes.OK) {
		t.Fatalf("status %v, want OK: %s", resp.GetStatus(), protojson.Format(resp))
	}
	ok := resp.GetOkResponse()
	if len(ok.GetHeaders()) != 1 || ok.GetHeaders()[0].GetHeader().GetValue() != "v1" {
		t.Errorf("upstream headers %v, want x-first-segment: v1", ok.GetHeaders())
	}
	if strings.Join(ok.GetHeadersToRemove(), ",") != "authorization" {
		t.Errorf("headers to remove %v", ok.GetHeadersToRemove())
	}

	event := opa.log.only(t)
	if event.DecisionID != decisionIDOf(t, resp) {
		t.Errorf("logged decision id %q, Envoy got %q", event.DecisionID, decisionIDOf(t, resp))
	}
	if event.Path != "nexus/authz/decision" {
		t.Errorf("logged path %q", event.Path)
	}
	if event.Bundles["nexus"].Revision != testRevision {
		t.Errorf("logged bundles %v, want nexus at %s", event.Bundles, testRevision)
	}
	if event.Labels["region"] != "test-1" {
		t.Errorf("logged labels %v", event.Labels)
	}
	if event.Error != nil || event.Result == nil {
		t.Fatalf("logged error %v, result %v", event.Error, event.Result)
	}
	if got := mustJSON(t, *event.Result); !strings.Contains(got, `"allowed":true`) {
		t.Errorf("logged result %s", got)
	}
	if got := mustJSON(t, event.RuleLabels); !strings.Contains(got, "SOC2:CC6.1") {
		t.Errorf("rule_labels %s do not name the allow rule's controls", got)
	}
	input := mustJSON(t, *event.Input)
	for _, kept := range []string{`"parsed_path":["v1","chat","completions"]`, `"x-nexus-tenant":"acme"`, `"authorization":"masked"`} {
		if !strings.Contains(input, kept) {
			t.Errorf("logged input lacks %s: %s", kept, input)
		}
	}
	for _, masked := range []string{"nx_secret", "gpt-4o"} {
		if strings.Contains(input, masked) {
			t.Errorf("logged input still holds %q: %s", masked, input)
		}
	}
}

func TestARefusalIsEnvoysDeniedAnswer(t *testing.T) {
	opa := newTestOPA(t)
	p := opa.plugin(t, decisionPlugin)
	req := acmeCheck()
	req.Attributes.Request.Http.Headers["x-nexus-tenant"] = "hooli"

	resp, err := p.Check(context.Background(), req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	denied := resp.GetDeniedResponse()
	if resp.GetStatus().GetCode() != int32(codes.PermissionDenied) || denied.GetStatus().GetCode() != 403 {
		t.Fatalf("answer %s, want a 403 refusal", protojson.Format(resp))
	}
	if denied.GetBody() != `{"error":"denied"}` {
		t.Errorf("body %q", denied.GetBody())
	}
	event := opa.log.only(t)
	if event.DecisionID != decisionIDOf(t, resp) || event.Result == nil {
		t.Errorf("logged %s", mustJSON(t, event))
	}
}

// Each way the policy itself can fail is a named gRPC error (Envoy then
// refuses, failure_mode_allow being false) and a logged decision with
// that error and no result.
func TestAFailingPolicyFailsClosedAndIsLogged(t *testing.T) {
	cases := []struct {
		name      string
		path      string
		code      string
		message   string
		loggedErr func(t testing.TB, err error)
	}{
		{
			name: "undefined decision", path: "nexus/authz/nothing", code: CodeUndefined,
			message: "the decision is undefined: the policy must give it a default",
			loggedErr: func(t testing.TB, err error) {
				assertCheckError(t, err, CodeUndefined)
			},
		},
		{
			name: "conflicting rules", path: "nexus/authz/conflicting", code: CodeEval,
			message: "the policy evaluation failed (eval_conflict_error)",
			loggedErr: func(t testing.TB, err error) {
				// OPA's own error, whose code the audit service records.
				te, ok := err.(*topdown.Error)
				if !ok || te.Code != topdown.ConflictErr {
					t.Errorf("logged error %v (%T), want OPA's conflict error", err, err)
				}
			},
		},
		{
			name: "malformed decision", path: "nexus/authz/malformed", code: CodeResult,
			message: "decision.allowed must be a boolean, not a string",
			loggedErr: func(t testing.TB, err error) {
				assertCheckError(t, err, CodeResult)
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opa := newTestOPA(t)
			p := opa.plugin(t, `{"path": "`+tc.path+`"}`)
			resp, err := p.Check(context.Background(), acmeCheck())
			if resp != nil {
				t.Fatalf("a failed policy answered %s", protojson.Format(resp))
			}
			ce := assertCheckError(t, err, tc.code)
			if ce.Message != tc.message {
				t.Errorf("message %q, want %q", ce.Message, tc.message)
			}
			if st, _ := status.FromError(err); st.Code() != codes.Internal {
				t.Errorf("gRPC code %v, want Internal", st.Code())
			}
			event := opa.log.only(t)
			if event.Result != nil {
				t.Errorf("logged a result %v for a failed decision", *event.Result)
			}
			if event.Error == nil {
				t.Fatal("logged no error")
			}
			tc.loggedErr(t, event.Error)
		})
	}
}

func TestADecisionTheLogRefusesIsNotMade(t *testing.T) {
	opa := newTestOPA(t)
	opa.log.refuse = errAuditUnreachable
	p := opa.plugin(t, decisionPlugin)

	resp, err := p.Check(context.Background(), acmeCheck())
	if resp != nil {
		t.Fatalf("answered %s although the decision log refused it", protojson.Format(resp))
	}
	ce := assertCheckError(t, err, CodeDecisionLog)
	if ce.status != codes.Unavailable {
		t.Errorf("gRPC code %v", ce.status)
	}
}

func TestANewPolicyAnswersWithoutARestart(t *testing.T) {
	opa := newTestOPA(t)
	p := opa.plugin(t, decisionPlugin)
	ctx := context.Background()
	if _, err := p.Check(ctx, acmeCheck()); err != nil {
		t.Fatal(err)
	}
	opa.log.only(t)

	refuseAll := strings.Replace(testPolicy, `== "acme"`, `== "nobody"`, 1)
	err := storage.Txn(ctx, opa.manager.Store, storage.WriteParams, func(txn storage.Transaction) error {
		return opa.manager.Store.UpsertPolicy(ctx, txn, "nexus/nexus/authz.rego", []byte(refuseAll))
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.Check(ctx, acmeCheck())
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDeniedResponse() == nil {
		t.Errorf("the replaced policy still allows: %s", protojson.Format(resp))
	}
}

// Envoy's side of the wire: a gRPC client on loopback against the started
// plugin.
func TestCheckOverGRPC(t *testing.T) {
	opa := newTestOPA(t)
	p := opa.plugin(t, decisionPlugin)
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
	client := authv3.NewAuthorizationClient(conn)

	resp, err := client.Check(ctx, acmeCheck())
	if err != nil {
		t.Fatalf("Check over gRPC: %v", err)
	}
	event := opa.log.only(t)
	if event.DecisionID != decisionIDOf(t, resp) {
		t.Errorf("logged %q, Envoy got %q", event.DecisionID, decisionIDOf(t, resp))
	}
	if !strings.HasPrefix(event.RequestedBy, "127.0.0.1:") {
		t.Errorf("requested_by %q, want the client's loopback address", event.RequestedBy)
	}

	// A request the plugin refuses itself is an ordinary refusal, with its
	// decision id, and a logged decision.
	refused, err := client.Check(ctx, httpCheck("GET", "/v1/chats/%zz", nil, ""))
	if err != nil {
		t.Fatalf("a malformed path: %v", err)
	}
	if refused.GetDeniedResponse().GetStatus().GetCode() != 400 {
		t.Errorf("a malformed path: %s", protojson.Format(refused))
	}
	if opa.log.only(t).DecisionID != decisionIDOf(t, refused) {
		t.Error("the refusal is logged under another decision id")
	}
}

var _ logs.Logger = (*capturedLog)(nil)

// A request the plugin refuses without asking the policy is still a
// decision: the client gets the gateway's refusal shape, and the log gets
// the decision (allowed false, status, reason with controls) and the code
// of the refusal.
func TestARequestThePluginRefusesIsAnsweredAndLoggedAsADecision(t *testing.T) {
	opa := newTestOPA(t)
	p := opa.plugin(t, decisionPlugin)

	resp, err := p.Check(context.Background(), httpCheck("GET", "/v1/chats/c1?token=%zz", map[string]string{"x-nexus-tenant": "acme"}, ""))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	denied := resp.GetDeniedResponse()
	if resp.GetStatus().GetCode() != int32(codes.PermissionDenied) || denied.GetStatus().GetCode() != 400 {
		t.Fatalf("answer %s, want a 400 refusal", protojson.Format(resp))
	}
	wantBody := `{"error":"denied","reasons":[{"controls":["SOC2:PI1.2","ISO27001:A.8.26"],` +
		`"message":"the query string has a malformed percent-escape or a \";\"","rule":"nexus.request.target_invalid"}]}`
	if denied.GetBody() != wantBody {
		t.Errorf("body %s\nwant %s", denied.GetBody(), wantBody)
	}
	if h := denied.GetHeaders(); len(h) != 1 || h[0].GetHeader().GetKey() != "content-type" || h[0].GetHeader().GetValue() != "application/json" {
		t.Errorf("headers %v", h)
	}

	event := opa.log.only(t)
	if event.DecisionID != decisionIDOf(t, resp) {
		t.Errorf("logged %q, answered %q", event.DecisionID, decisionIDOf(t, resp))
	}
	if event.Result == nil {
		t.Fatal("no result logged")
	}
	wantResult := `{"allowed":false,"http_status":400,"reasons":[{"controls":["SOC2:PI1.2","ISO27001:A.8.26"],` +
		`"message":"the query string has a malformed percent-escape or a \";\"","rule":"nexus.request.target_invalid"}]}`
	if got := mustJSON(t, *event.Result); got != wantResult {
		t.Errorf("logged result %s\nwant %s", got, wantResult)
	}
	if got := mustJSON(t, event.Error); got != `{"code":"request_parse_error","message":"the query string has a malformed percent-escape or a \";\""}` {
		t.Errorf("logged error %s", got)
	}
	if got := mustJSON(t, *event.Input); !strings.Contains(got, `"x-nexus-tenant":"acme"`) {
		t.Errorf("logged input lacks the request's attributes: %s", got)
	}
}
