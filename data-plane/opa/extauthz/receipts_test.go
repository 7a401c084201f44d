package extauthz

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// receiptSchemaFile is the contract's receipt schema, which pytest checks
// the intake against too.
var receiptSchemaFile = filepath.Join("..", "..", "..", "contract", "nexus_contract",
	"schemas", "receipt", "receipt.schema.json")

func receiptSchema(t *testing.T) any {
	t.Helper()
	raw, err := os.ReadFile(receiptSchemaFile)
	if err != nil {
		t.Fatalf("the contract's receipt schema: %v", err)
	}
	var schema any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	return schema
}

// grpcEnforcer is the plugin serving on loopback, with clients for both of
// its services, as Envoy uses them.
type grpcEnforcer struct {
	opa   *testOPA
	p     *Plugin
	authz authv3.AuthorizationClient
	als   accesslogv3.AccessLogServiceClient
}

func startEnforcer(t *testing.T) *grpcEnforcer {
	t.Helper()
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
	return &grpcEnforcer{opa: opa, p: p, authz: authv3.NewAuthorizationClient(conn), als: accesslogv3.NewAccessLogServiceClient(conn)}
}

// check asks for acme's request under x-request-id requestID; it returns
// the decision id answered, having taken its decision-log event.
func (e *grpcEnforcer) check(t *testing.T, requestID string) string {
	t.Helper()
	req := acmeCheck()
	req.Attributes.Request.Http.Headers[requestIDHeader] = requestID
	resp, err := e.authz.Check(context.Background(), req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	id := decisionIDOf(t, resp)
	if event := e.opa.log.only(t); event.DecisionID != id || event.Path != "nexus/authz/decision" {
		t.Fatalf("the decision's event: %+v", event)
	}
	return id
}

// send streams Envoy's access log entries and closes the stream, which
// returns once the plugin read (and judged) them all.
func (e *grpcEnforcer) send(t *testing.T, entries ...*accesslogdatav3.HTTPAccessLogEntry) {
	t.Helper()
	stream, err := e.als.StreamAccessLogs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	first := &accesslogv3.StreamAccessLogsMessage{
		Identifier: &accesslogv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "eu-1a"}, LogName: "nexus-delivery"},
		LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: entries}},
	}
	if err := stream.Send(first); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
}

// logEntry is what Envoy logs for a request: status, details, UAEX when
// ext_authz refused or failed, the decision id when it applied an answer.
func logEntry(requestID string, code uint32, details, decisionID string, upstream bool) *accesslogdatav3.HTTPAccessLogEntry {
	common := &accesslogdatav3.AccessLogCommon{ResponseFlags: &accesslogdatav3.ResponseFlags{}}
	if details == detailsAuthzError || details == detailsAuthzDenied {
		common.ResponseFlags.UnauthorizedDetails = &accesslogdatav3.ResponseFlags_Unauthorized{
			Reason: accesslogdatav3.ResponseFlags_Unauthorized_EXTERNAL_SERVICE,
		}
	}
	if decisionID != "" {
		md, _ := structpb.NewStruct(map[string]any{decisionIDKey: decisionID})
		common.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{metadataNamespace: md}}
	}
	if upstream {
		common.UpstreamRemoteAddress = socketAddress("127.0.0.1", 8080)
	}
	return &accesslogdatav3.HTTPAccessLogEntry{
		CommonProperties: common,
		Request:          &accesslogdatav3.HTTPRequestProperties{RequestId: requestID, Path: "/v1/chat/completions"},
		Response:         &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(code), ResponseCodeDetails: details},
	}
}

func TestAnAllowEnvoyTimedOutOnGetsAnUndeliveredReceipt(t *testing.T) {
	e := startEnforcer(t)
	late := e.check(t, "req-late")
	delivered := e.check(t, "req-ok")

	e.send(t,
		logEntry("req-ok", 200, "via_upstream", delivered, true),
		logEntry("req-late", 503, detailsAuthzError, "", false),
	)

	receipt := e.opa.log.only(t)
	if receipt.Path != ReceiptPath {
		t.Fatalf("path %q, want %q", receipt.Path, ReceiptPath)
	}
	if receipt.DecisionID == late {
		t.Fatal("the receipt reuses the decision's id: it is an event of its own")
	}
	result := (*receipt.Result).(map[string]any)
	if result["decision_id"] != late || result["delivered"] != false || result["reason"] != receiptExtAuthzError {
		t.Fatalf("receipt %v, want decision %s undelivered by ext_authz_error", result, late)
	}
	if receipt.Labels["region"] != "test-1" {
		t.Errorf("labels %v: a receipt carries the enforcer's labels, as decisions do", receipt.Labels)
	}
	// As the durable log and the intake read it: JSON, in the contract's shape.
	var decoded any
	raw, err := json.Marshal(result)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &decoded); err != nil {
		t.Fatal(err)
	}
	if !matchesSchema(t, decoded, receiptSchema(t)) {
		t.Fatalf("the receipt is not the contract's: %s", raw)
	}
	envoy := decoded.(map[string]any)["envoy"].(map[string]any)
	if envoy["response_code"] != 503.0 || envoy["flags"].([]any)[0] != "UAEX" {
		t.Errorf("envoy %v: the receipt says what Envoy answered", envoy)
	}
}

func TestADeliveredAnswerWritesNoReceipt(t *testing.T) {
	e := startEnforcer(t)
	id := e.check(t, "req-1")
	e.send(t, logEntry("req-1", 200, "via_upstream", id, true))
	if n := e.opa.log.total(); n != 1 {
		t.Fatalf("%d events, want only the decision's", n)
	}
}

// A Check whose deadline had passed when it reached the plugin is shed as
// unanswered; when Envoy's access log says it applied that refusal even so
// (its own timer fired late), the receipt corrects the leaf.
func TestAShedRefusalEnvoyAppliedAfterAllGetsADeliveredReceipt(t *testing.T) {
	e := startEnforcer(t)
	expired, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	req := acmeCheck()
	req.Attributes.Request.Http.Headers[requestIDHeader] = "req-shed"
	resp, err := e.p.Check(expired, req)
	if err != nil {
		t.Fatal(err)
	}
	shed := e.opa.log.only(t)
	if got := (*shed.Result).(map[string]any)["shed"]; got != shedDeadline {
		t.Fatalf("result %v, want a Check shed on its deadline", *shed.Result)
	}
	status := uint32(resp.GetDeniedResponse().GetStatus().GetCode())
	e.send(t, logEntry("req-shed", status, detailsAuthzDenied, shed.DecisionID, false))

	receipt := e.opa.log.only(t)
	result := (*receipt.Result).(map[string]any)
	if result["decision_id"] != shed.DecisionID || result["delivered"] != true || result["reason"] != receiptShedDelivered {
		t.Fatalf("receipt %v, want decision %s delivered after all", result, shed.DecisionID)
	}
	raw, err := json.Marshal(result)
	if err != nil {
		t.Fatal(err)
	}
	var decoded any
	if err := json.Unmarshal(raw, &decoded); err != nil {
		t.Fatal(err)
	}
	if !matchesSchema(t, decoded, receiptSchema(t)) {
		t.Fatalf("the receipt is not the contract's: %s", raw)
	}
}

// A shed Check Envoy did give up on needs no receipt: its leaf says so.
func TestAShedRefusalEnvoyTimedOutOnWritesNoReceipt(t *testing.T) {
	e := startEnforcer(t)
	expired, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	req := acmeCheck()
	req.Attributes.Request.Http.Headers[requestIDHeader] = "req-shed"
	if _, err := e.p.Check(expired, req); err != nil {
		t.Fatal(err)
	}
	e.opa.log.only(t)
	e.send(t, logEntry("req-shed", 503, detailsAuthzError, "", false))
	if n := e.opa.log.total(); n != 1 {
		t.Fatalf("%d events, want only the shed Check's", n)
	}
}

func TestTheReceiptSchemaRefusesWhatThePluginMustNotWrite(t *testing.T) {
	schema := receiptSchema(t)
	for _, bad := range []string{
		`{"decision_id": "d", "delivered": true, "reason": "ext_authz_error", "answered": {"allowed": true}, "envoy": {"response_code": 200, "details": "", "flags": []}}`,
		`{"decision_id": "d", "delivered": false, "reason": "because", "answered": {"allowed": true}, "envoy": {"response_code": 503, "details": "", "flags": []}}`,
		`{"decision_id": "d", "delivered": false, "reason": "client_gone", "answered": {"allowed": true}}`,
		`{"decision_id": "d", "delivered": false, "reason": "shed_answer_delivered", "answered": {"allowed": false}, "envoy": {"response_code": 503, "details": "", "flags": []}}`,
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
