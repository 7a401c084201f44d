package extauthz

import (
	"context"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	grpcmd "google.golang.org/grpc/metadata"
)

// Tracing reuses OPA's own `distributed_tracing` configuration: the manager's
// tracer provider exports over OTLP with OPA's sampler (parent-based, so the
// sampling decision Envoy made for the request holds here too). With the key
// absent the provider is nil and a Check starts no span at all.
const (
	tracerName    = "nexus.local/opa-enforcer/extauthz"
	checkSpanName = "nexus.extauthz.Check"

	// The evaluation timer OPA's metrics carry for a query.
	evalTimer = "timer_rego_query_eval_ns"

	// tenantHeader names the request header whose value becomes the span's
	// tenant attribute.
	tenantHeader = "x-nexus-tenant"
	// maxRuleAttrs bounds the deciding-rule attribute: a decision with
	// more reasons than this records the first ones.
	maxRuleAttrs = 16
)

// Span attributes of a Check span.
const (
	attrDecisionID = attribute.Key("nexus.decision_id")
	attrTenant     = attribute.Key("nexus.tenant")
	attrRoute      = attribute.Key("nexus.route")
	attrMethod     = attribute.Key("http.request.method")
	attrOutcome    = attribute.Key("nexus.outcome")
	attrRules      = attribute.Key("nexus.rules")
	attrEvalNs     = attribute.Key("nexus.eval_ns")
)

var traceContext = propagation.TraceContext{}

// startCheckSpan opens the Check's span as a child of the caller's: the
// trace context Envoy's gRPC client sends as metadata (its ext_authz span),
// else the one the request itself carried. With tracing off it returns ctx
// and a nil span.
func (p *Plugin) startCheckSpan(ctx context.Context, req *authv3.CheckRequest) (context.Context, trace.Span) {
	tp := p.manager.TracerProvider()
	if tp == nil {
		return ctx, nil
	}
	parent := traceContext.Extract(ctx, grpcCarrier(ctx))
	if !trace.SpanContextFromContext(parent).IsValid() {
		parent = traceContext.Extract(ctx, headerCarrier(req.GetAttributes().GetRequest().GetHttp().GetHeaders()))
	}
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	path, _, _ := strings.Cut(httpReq.GetPath(), "?")
	return tp.Tracer(tracerName).Start(parent, checkSpanName,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attrTenant.String(httpReq.GetHeaders()[tenantHeader]),
			attrRoute.String(path),
			attrMethod.String(httpReq.GetMethod()),
		))
}

// endCheckSpan records what was decided and closes the span.
func endCheckSpan(span trace.Span, ev *evaluation, resp *authv3.CheckResponse, err error) {
	if span == nil {
		return
	}
	result := outcome(ev, resp, err)
	span.SetAttributes(
		attrDecisionID.String(ev.decisionID),
		attrOutcome.String(result),
		attrRules.StringSlice(decidingRules(ev)),
	)
	if ev.metrics != nil {
		if ns, ok := ev.metrics.All()[evalTimer].(int64); ok {
			span.SetAttributes(attrEvalNs.Int64(ns))
		}
	}
	if err != nil {
		span.SetStatus(otelcodes.Error, err.Error())
	}
	span.End()
}

// decidingRules are the rule ids the decision's reasons name, or the
// plugin's own refusal rule.
func decidingRules(ev *evaluation) []string {
	if ev.refused != nil {
		if d, ok := ev.refused.decision().(map[string]any); ok {
			return reasonRules(d)
		}
		return nil
	}
	if d, ok := ev.result.(map[string]any); ok {
		return reasonRules(d)
	}
	return nil
}

func reasonRules(decision map[string]any) []string {
	reasons, _ := decision["reasons"].([]any)
	var rules []string
	for _, r := range reasons {
		if len(rules) == maxRuleAttrs {
			break
		}
		if m, ok := r.(map[string]any); ok {
			if rule, ok := m["rule"].(string); ok {
				rules = append(rules, rule)
			}
		}
	}
	return rules
}

// grpcCarrier reads the incoming gRPC metadata as a propagation carrier.
func grpcCarrier(ctx context.Context) propagation.TextMapCarrier {
	md, _ := grpcmd.FromIncomingContext(ctx)
	return metadataCarrier{md: md}
}

type metadataCarrier struct{ md grpcmd.MD }

func (c metadataCarrier) Get(key string) string {
	if v := c.md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c metadataCarrier) Set(string, string) {}

func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c.md))
	for k := range c.md {
		keys = append(keys, k)
	}
	return keys
}

// headerCarrier reads the request headers Envoy forwarded (lower-cased keys).
type headerCarrier map[string]string

func (h headerCarrier) Get(key string) string { return h[strings.ToLower(key)] }
func (h headerCarrier) Set(string, string)    {}
func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}
