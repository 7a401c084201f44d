package extauthz

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"

	"nexus.local/opa-enforcer/internal/promreg"
)

// The decision metrics (contract/nexus_contract/schemas/decision_metrics):
// what operators ask of an enforcer — decisions by outcome, route, tool,
// capability and reason, and how long they took per capability — with
// label sets bounded whatever the requests carry. Route, tool and
// capability come from the decision's `labels` (the policy names them from
// the bundle, never from the request); each label also keeps at most
// maxLabelValues distinct values, the rest counted as "other", so a
// policy defect cannot grow the series either.
const (
	decisionsMetric       = "nexus_decisions_total"
	durationMetric        = "nexus_decision_duration_seconds"
	tenantDecisionsMetric = "nexus_tenant_decisions_total"

	noValue        = "none"
	overflowValue  = "other"
	maxLabelValues = 64
	// errorReason is the reason label of a Check that failed (gRPC error).
	errorReason = "error"
	// maxMetricTenants bounds the metric-tenants setting: each one adds
	// series per outcome.
	maxMetricTenants = 50
)

// durationBuckets span a cached allow to Envoy's timeout and beyond; the
// SLOs spec's latency thresholds must be one of them.
var durationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}

var labelValue = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?$`)

// boundedLabel admits at most max distinct values of one label.
type boundedLabel struct {
	seen sync.Map // value -> struct{}
	mu   sync.Mutex
	n    int
	max  int
}

func (b *boundedLabel) value(v string) string {
	if v == "" {
		return noValue
	}
	if _, ok := b.seen.Load(v); ok {
		return v
	}
	if !labelValue.MatchString(v) {
		return overflowValue
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.seen.Load(v); ok {
		return v
	}
	if b.n >= b.max {
		return overflowValue
	}
	b.seen.Store(v, struct{}{})
	b.n++
	return v
}

type decisionMetrics struct {
	decisions *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	tenants   *prometheus.CounterVec
	// tenantSet is the metric-tenants setting.
	tenantSet map[string]bool

	route, tool, capability, reason boundedLabel
}

func newDecisionMetrics(tenants []string) *decisionMetrics {
	m := &decisionMetrics{
		tenantSet: make(map[string]bool, len(tenants)),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: decisionsMetric,
			Help: "Checks answered, by outcome, route, tool, agent capability and reason (the deciding rule, the shed reason, or error).",
		}, []string{"outcome", "route", "tool", "capability", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    durationMetric,
			Help:    "Time from a Check's arrival to its answer, admission wait included, by agent capability and outcome.",
			Buckets: durationBuckets,
		}, []string{"capability", "outcome"}),
		tenants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: tenantDecisionsMetric,
			Help: "Checks answered for the tenants the plugin's metric-tenants names (by the request's tenant header), by outcome.",
		}, []string{"tenant", "outcome"}),
	}
	for _, b := range []*boundedLabel{&m.route, &m.tool, &m.capability, &m.reason} {
		b.max = maxLabelValues
	}
	for _, t := range tenants {
		m.tenantSet[t] = true
	}
	return m
}

func (m *decisionMetrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	var err error
	if m.decisions, err = promreg.Registered(reg, m.decisions); err != nil {
		return err
	}
	if m.duration, err = promreg.Registered(reg, m.duration); err != nil {
		return err
	}
	if m.tenants, err = promreg.Registered(reg, m.tenants); err != nil {
		return err
	}
	m.bornAtZero()
	return nil
}

// bornAtZero creates the tenant series before their first event. The
// per-capability series need not exist early: the SLO rules count a
// missing outcome as zero.
func (m *decisionMetrics) bornAtZero() {
	for t := range m.tenantSet {
		for _, o := range allOutcomes {
			m.tenants.WithLabelValues(t, o)
		}
	}
}

var allOutcomes = []string{outcomeAllowed, outcomeDenied, outcomeRefused, outcomeShed, outcomeError, outcomeReservation}

// decisionLabels are what a Check's metrics are labelled by.
type decisionLabels struct {
	route, tool, capability string
}

// observe counts one answered Check.
func (m *decisionMetrics) observe(ev *evaluation, outcome, tenant string) {
	l := ev.labels
	capability := m.capability.value(l.capability)
	m.decisions.WithLabelValues(outcome, m.route.value(l.route), m.tool.value(l.tool), capability,
		m.reason.value(reasonOf(ev, outcome))).Inc()
	m.duration.WithLabelValues(capability, outcome).Observe(time.Since(ev.started).Seconds())
	if m.tenantSet[tenant] {
		m.tenants.WithLabelValues(tenant, outcome).Inc()
	}
}

// reasonOf is the reason label: the deciding rule of a refusal, the shed
// reason, "error", or "none" for an allow.
func reasonOf(ev *evaluation, outcome string) string {
	switch outcome {
	case outcomeAllowed:
		return noValue
	case outcomeError:
		return errorReason
	case outcomeShed:
		return ev.refused.shed
	}
	if ev.refused != nil {
		return ev.refused.rule
	}
	// The first reason's rule, read in place: decidingRules builds the
	// whole list (and a refusal's decision) for the span, not per Check.
	if d, ok := ev.result.(map[string]any); ok {
		if reasons, _ := d["reasons"].([]any); len(reasons) > 0 {
			if r, ok := reasons[0].(map[string]any); ok {
				if rule, ok := r["rule"].(string); ok {
					return rule
				}
			}
		}
	}
	return noValue
}

// labelsFrom reads a decision's `labels` object; absent fields stay "".
func labelsFrom(result any) (decisionLabels, bool) {
	d, ok := result.(map[string]any)
	if !ok {
		return decisionLabels{}, false
	}
	raw, ok := d["labels"].(map[string]any)
	if !ok {
		return decisionLabels{}, false
	}
	str := func(k string) string { s, _ := raw[k].(string); return s }
	return decisionLabels{route: str("route"), tool: str("tool"), capability: str("capability")}, true
}

// labelsOf names what a Check was for. A decision carries its labels;
// a request the policy did not decide (shed, refused by the plugin, an
// evaluation error) is labelled by the labels-path query, when one is
// configured, so an availability objective counts it against its
// capability. That document must depend on the request's method and path
// only (the gateway's does: route, tool, capability): its answers are
// kept per method and path until the policy changes, so under overload a
// shed Check costs a map lookup, not an evaluation.
func (p *Plugin) labelsOf(ctx context.Context, txn storage.Transaction, ev *evaluation, req *authv3.CheckRequest) decisionLabels {
	if l, ok := labelsFrom(ev.result); ok {
		return l
	}
	if p.cfg.LabelsPath == "" || ev.inputAST == nil {
		return decisionLabels{}
	}
	key := labelsKey(req)
	if l, ok := p.labelsCache.get(key); ok {
		return l
	}
	pq, err := p.labelsQuery(ctx)
	if err != nil {
		return decisionLabels{}
	}
	rs, err := pq.Eval(ctx, rego.EvalParsedInput(ev.inputAST), rego.EvalTransaction(txn))
	if err != nil || len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return decisionLabels{}
	}
	l, _ := labelsFrom(map[string]any{"labels": rs[0].Expressions[0].Value})
	p.labelsCache.put(key, l)
	return l
}

func labelsKey(req *authv3.CheckRequest) string {
	h := req.GetAttributes().GetRequest().GetHttp()
	path, _, _ := strings.Cut(h.GetPath(), "?")
	return h.GetMethod() + " " + path
}

// maxCachedLabels bounds the labels cache; past it, entries are evaluated
// and not kept (paths with ids, such as /v1/chats/{id}, are many).
const maxCachedLabels = 4096

// labelsCache holds labels-path answers by method and path for one
// policy: dropped whenever the compiler changes.
type labelsCache struct {
	mu      sync.RWMutex
	entries map[string]decisionLabels
}

func (c *labelsCache) get(key string) (decisionLabels, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	l, ok := c.entries[key]
	return l, ok
}

func (c *labelsCache) put(key string, l decisionLabels) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[string]decisionLabels)
	}
	if len(c.entries) < maxCachedLabels {
		c.entries[key] = l
	}
}

func (c *labelsCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = nil
}

// tenantOf is the tenant the request names (its x-nexus-tenant header).
// The policy refuses a header naming another tenant than the credential's,
// so the per-tenant counts read "decisions on requests naming the tenant".
func tenantOf(req *authv3.CheckRequest) string {
	return req.GetAttributes().GetRequest().GetHttp().GetHeaders()[tenantHeader]
}
