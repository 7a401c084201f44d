package extauthz

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	grpcmd "google.golang.org/grpc/metadata"
)

const (
	envoyTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	envoySpanID  = "00f067aa0ba902b7"
	clientSpanID = "b7ad6b7169203331"
)

func tracedOPA(t *testing.T) (*testOPA, *tracetest.InMemoryExporter) {
	t.Helper()
	exporter := tracetest.NewInMemoryExporter()
	setup := testSetup()
	setup.tracer = sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	return newOPA(t, setup), exporter
}

func onlySpan(t *testing.T, exporter *tracetest.InMemoryExporter) tracetest.SpanStub {
	t.Helper()
	spans := exporter.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want one Check span", len(spans))
	}
	return spans[0]
}

func attrs(span tracetest.SpanStub) map[attribute.Key]attribute.Value {
	out := map[attribute.Key]attribute.Value{}
	for _, kv := range span.Attributes {
		out[kv.Key] = kv.Value
	}
	return out
}

func TestACheckSpanIsAChildOfEnvoysExtAuthzSpanAndCarriesTheDecision(t *testing.T) {
	opa, exporter := tracedOPA(t)
	p := opa.plugin(t, decisionPlugin)
	req := acmeCheck()
	// The request carries the client's context; Envoy's gRPC metadata its own
	// ext_authz span, which is the parent.
	req.Attributes.Request.Http.Headers["traceparent"] = "00-" + envoyTraceID + "-" + clientSpanID + "-01"
	ctx := grpcmd.NewIncomingContext(context.Background(),
		grpcmd.Pairs("traceparent", "00-"+envoyTraceID+"-"+envoySpanID+"-01"))

	resp, err := p.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	span := onlySpan(t, exporter)
	if span.Name != checkSpanName || span.SpanKind != trace.SpanKindServer {
		t.Errorf("span %q kind %v", span.Name, span.SpanKind)
	}
	if got := span.SpanContext.TraceID().String(); got != envoyTraceID {
		t.Errorf("trace id %s, want Envoy's %s", got, envoyTraceID)
	}
	if got := span.Parent.SpanID().String(); got != envoySpanID {
		t.Errorf("parent span %s, want Envoy's ext_authz span %s", got, envoySpanID)
	}
	a := attrs(span)
	if got := a[attrDecisionID].AsString(); got != decisionIDOf(t, resp) {
		t.Errorf("decision id %q, Envoy got %q", got, decisionIDOf(t, resp))
	}
	want := map[attribute.Key]string{attrTenant: "acme", attrRoute: "/v1/chat/completions", attrOutcome: outcomeAllowed, attrMethod: "POST"}
	for k, v := range want {
		if a[k].AsString() != v {
			t.Errorf("%s = %q, want %q", k, a[k].AsString(), v)
		}
	}
	if a[attrEvalNs].AsInt64() <= 0 {
		t.Errorf("evaluation time %v, want > 0", a[attrEvalNs])
	}
}

func TestADeniedCheckSpanNamesTheDecidingRulesAndFallsBackToTheRequestsTraceContext(t *testing.T) {
	opa, exporter := tracedOPA(t)
	p := opa.plugin(t, decisionPlugin)
	req := httpCheck("GET", "/v1/chats/c1", map[string]string{
		"x-nexus-tenant": "globex",
		"traceparent":    "00-" + envoyTraceID + "-" + clientSpanID + "-01",
	}, "")

	if _, err := p.Check(context.Background(), req); err != nil {
		t.Fatalf("Check: %v", err)
	}
	span := onlySpan(t, exporter)
	if got := span.Parent.SpanID().String(); got != clientSpanID {
		t.Errorf("parent span %s, want the request's %s", got, clientSpanID)
	}
	a := attrs(span)
	if a[attrOutcome].AsString() != outcomeDenied {
		t.Errorf("outcome %q", a[attrOutcome].AsString())
	}
	if rules := a[attrRules].AsStringSlice(); len(rules) != 1 || rules[0] != "test.denied" {
		t.Errorf("rules %v, want [test.denied]", rules)
	}
}

func TestWithoutDistributedTracingACheckStartsNoSpan(t *testing.T) {
	opa := newTestOPA(t)
	p := opa.plugin(t, decisionPlugin)
	ctx, span := p.startCheckSpan(context.Background(), acmeCheck())
	if span != nil || trace.SpanFromContext(ctx).SpanContext().IsValid() {
		t.Fatalf("a span was started with no tracer provider")
	}
}

func TestAMalformedTraceparentStartsANewTraceAndTheCheckIsStillDecided(t *testing.T) {
	opa, exporter := tracedOPA(t)
	p := opa.plugin(t, decisionPlugin)
	req := acmeCheck()
	req.Attributes.Request.Http.Headers["traceparent"] = "00-" + strings.Repeat("z", 4096) + "-01"
	ctx := grpcmd.NewIncomingContext(context.Background(), grpcmd.Pairs("traceparent", "garbage"))

	resp, err := p.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	span := onlySpan(t, exporter)
	if span.Parent.IsValid() {
		t.Errorf("span has parent %v from a malformed traceparent", span.Parent)
	}
	if got := attrs(span)[attrDecisionID].AsString(); got != decisionIDOf(t, resp) {
		t.Errorf("decision id %q, Envoy got %q", got, decisionIDOf(t, resp))
	}
}
