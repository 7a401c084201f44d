package extauthz

// Shadow evaluation: a candidate bundle (shadowbundle.go), downloaded and
// verified like any bundle and held in a store of its own, judges a sample
// of the Checks the plugin has already answered. Check only offers the
// sample to a bounded channel (offer): a full channel drops it, counted,
// so the answer is never held or slowed. One worker evaluates each sample
// against the candidate with the same input and the same recorded
// non-deterministic built-ins, and compares Envoy's answer from both
// decisions: unchanged, allow_to_deny, deny_to_allow, status_changed,
// headers_changed, or error (the candidate failed). Every outcome, unchanged
// ones included (a gate needs the denominator), is a metric and a
// decision-log record of its own (shadowrecord.go); a difference is also a
// structured log line.

import (
	"context"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"

	"nexus.local/opa-enforcer/internal/promreg"
)

// Changes: the change label of nexus_shadow_decisions_total, the buckets
// of the replay report.
const (
	changeUnchanged      = "unchanged"
	changeAllowToDeny    = "allow_to_deny"
	changeDenyToAllow    = "deny_to_allow"
	changeStatusChanged  = "status_changed"
	changeHeadersChanged = "headers_changed"
	changeError          = "error"
)

var allChanges = []string{changeUnchanged, changeAllowToDeny, changeDenyToAllow, changeStatusChanged, changeHeadersChanged, changeError}

// comparedHeaders are the result fields whose change is headers_changed,
// as the replay report compares them.
var comparedHeaders = []string{"headers", "response_headers_to_add"}

// shadowEvalTimeout bounds one candidate evaluation, so a candidate that
// loops cannot stall the worker for longer.
const shadowEvalTimeout = time.Second

// sample is what the worker needs of one answered Check. Every field is
// read-only once offered: the decision log has already encoded its copy.
type sample struct {
	decisionID string
	input      ast.Value
	result     any
	ndb        builtins.NDBCache
	labels     decisionLabels
}

// verdict is Envoy's answer reduced to what a change is judged by.
type verdict struct {
	allowed bool
	status  int
	rules   []string
	reasons []shadowReason
	headers []any
}

type shadowMetrics struct {
	decisions *prometheus.CounterVec
	dropped   prometheus.Counter
	lost      prometheus.Counter
	refused   *prometheus.CounterVec
	info      *prometheus.GaugeVec
}

func newShadowMetrics() *shadowMetrics {
	m := &shadowMetrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nexus_shadow_decisions_total",
			Help: "Answered Checks evaluated again against the shadow candidate, by change (unchanged, allow_to_deny, deny_to_allow, status_changed, error), route and tool.",
		}, []string{"change", "route", "tool"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nexus_shadow_dropped_total",
			Help: "Samples dropped because the shadow queue was full (the answer never waits for the shadow).",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nexus_shadow_records_lost_total",
			Help: "Shadow outcomes counted but not written to the decision log (the log refused them).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nexus_shadow_bundle_refused_total",
			Help: "Candidate bundles refused and never evaluated, by reason (verification, activation).",
		}, []string{"reason"}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nexus_shadow_bundle_info",
			Help: "1 for the revision of the shadow candidate held (none while none is).",
		}, []string{"revision"}),
	}
	for _, change := range allChanges {
		m.decisions.WithLabelValues(change, noValue, noValue)
	}
	for _, reason := range []string{refusedVerification, refusedActivation} {
		m.refused.WithLabelValues(reason)
	}
	return m
}

func (m *shadowMetrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	var err error
	if m.decisions, err = promreg.Registered(reg, m.decisions); err != nil {
		return err
	}
	if m.dropped, err = promreg.Registered(reg, m.dropped); err != nil {
		return err
	}
	if m.lost, err = promreg.Registered(reg, m.lost); err != nil {
		return err
	}
	if m.refused, err = promreg.Registered(reg, m.refused); err != nil {
		return err
	}
	m.info, err = promreg.Registered(reg, m.info)
	return err
}

func (m *shadowMetrics) setRevision(revision string) {
	m.info.Reset()
	m.info.WithLabelValues(revision).Set(1)
}

// shadow is the candidate, its downloader and the worker, for one plugin
// configuration.
type shadow struct {
	manager *plugins.Manager
	cfg     ShadowConfig
	query   string
	metrics *shadowMetrics
	// route and tool are the decision metrics' bounded labels.
	route, tool *boundedLabel
	// threshold: a Check is sampled when a uniform draw in [0, 1e6) is below it.
	threshold uint32

	queue      chan sample
	current    atomic.Pointer[candidate]
	downloader *download.Downloader
	stopOnce   sync.Once
	done       chan struct{}
	cancel     context.CancelFunc
}

// newShadow is nil when cfg is nil: offer on a nil shadow does nothing.
func newShadow(m *plugins.Manager, cfg *ShadowConfig, query string, d *decisionMetrics) *shadow {
	if cfg == nil {
		return nil
	}
	s := &shadow{
		manager:   m,
		cfg:       *cfg,
		query:     query,
		metrics:   newShadowMetrics(),
		route:     &d.route,
		tool:      &d.tool,
		threshold: uint32(cfg.SamplePercent * 10_000),
		queue:     make(chan sample, cfg.QueueSize),
		done:      make(chan struct{}),
	}
	if err := s.metrics.register(m.PrometheusRegister()); err != nil {
		m.Logger().Error("%s: shadow metrics not registered: %v", PluginName, err)
	}
	return s
}

// start begins polling for the candidate and starts the worker.
func (s *shadow) start() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.downloader = s.newDownloader()
	s.downloader.Start(ctx)
	go s.work(ctx)
	s.manager.Logger().Info("%s: shadow evaluation of %.3g%% of Checks against %s", PluginName, s.cfg.SamplePercent, s.cfg.Resource)
}

// stop ends the downloader and the worker; samples still queued are
// abandoned (they are a sample, not a record).
func (s *shadow) stop(ctx context.Context) {
	if s == nil || s.cancel == nil {
		return
	}
	s.stopOnce.Do(func() {
		if s.downloader != nil {
			s.downloader.Stop(ctx)
		}
		s.cancel()
		<-s.done
	})
}

// offer hands an answered Check to the worker when it is sampled, without
// ever waiting: a full queue drops the sample and counts it.
func (s *shadow) offer(ev *evaluation) {
	if s == nil || s.threshold == 0 || rand.Uint32N(1_000_000) >= s.threshold { // #nosec G404 -- a sample, not a secret
		return
	}
	if s.current.Load() == nil {
		return // no candidate yet: nothing to compare with
	}
	smp := sample{decisionID: ev.decisionID, input: ev.inputAST, result: ev.result, ndb: ev.ndbCache, labels: ev.labels}
	select {
	case s.queue <- smp:
	default:
		s.metrics.dropped.Inc()
	}
}

func (s *shadow) work(ctx context.Context) {
	defer close(s.done)
	for {
		select {
		case <-ctx.Done():
			return
		case smp := <-s.queue:
			s.judge(ctx, smp)
		}
	}
}

// judge evaluates one sample against the candidate and counts the change.
func (s *shadow) judge(ctx context.Context, smp sample) {
	c := s.current.Load()
	if c == nil {
		return
	}
	active := verdictOf(smp.result, smp.decisionID)
	activeRevision, activeRevisions := s.activeRevisions(ctx)
	started := time.Now()
	cand, err := s.evaluate(ctx, c, smp, activeRevisions)
	took := time.Since(started)
	change := classify(active, cand, err)
	s.metrics.decisions.WithLabelValues(change, s.route.value(smp.labels.route), s.tool.value(smp.labels.tool)).Inc()
	s.writeRecord(ctx, shadowOutcome{
		sample: smp, candidateRevision: c.revision, activeRevision: activeRevision,
		change: change, active: active, candidate: cand, err: err, took: took,
	})
	if change == changeUnchanged {
		return
	}
	fields := map[string]any{
		"record":             "shadow_outcome",
		"decision_id":        smp.decisionID,
		"active_revision":    activeRevision,
		"candidate_revision": c.revision,
		"change":             change,
		"active":             active.fields(),
		"route":              smp.labels.route,
		"tool":               smp.labels.tool,
	}
	if err != nil {
		fields["error"] = err.Error()
	} else {
		fields["candidate"] = cand.fields()
	}
	s.manager.Logger().WithFields(fields).Info("%s: shadow decision differs: %s", PluginName, change)
}

// activeRevisions is the revision of the bundle the candidate stands for,
// and all active revisions as one key (shared roots are re-copied when it
// changes).
func (s *shadow) activeRevisions(ctx context.Context) (string, string) {
	txn, err := s.manager.Store.NewTransaction(ctx)
	if err != nil {
		return "", ""
	}
	defer s.manager.Store.Abort(ctx, txn)
	revisions, err := bundleRevisions(ctx, s.manager.Store, txn)
	if err != nil {
		return "", ""
	}
	names := make([]string, 0, len(revisions))
	for name, info := range revisions {
		names = append(names, name+"="+info.Revision)
	}
	sort.Strings(names)
	return revisions[s.cfg.Bundle].Revision, strings.Join(names, ",")
}

func (s *shadow) evaluate(ctx context.Context, c *candidate, smp sample, activeRevisions string) (verdict, error) {
	ctx, cancel := context.WithTimeout(ctx, shadowEvalTimeout)
	defer cancel()
	if err := s.syncShared(ctx, c, activeRevisions); err != nil {
		return verdict{}, err
	}
	txn, err := c.store.NewTransaction(ctx)
	if err != nil {
		return verdict{}, err
	}
	defer c.store.Abort(ctx, txn)
	rs, err := c.prepared.Eval(ctx,
		rego.EvalParsedInput(smp.input),
		rego.EvalTransaction(txn),
		rego.EvalNDBuiltinCache(copyNDB(smp.ndb)),
	)
	if err != nil {
		return verdict{}, evalError(err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return verdict{}, errUndefined
	}
	if _, err := buildResponse(rs[0].Expressions[0].Value, smp.decisionID, false); err != nil {
		return verdict{}, err
	}
	return verdictOf(rs[0].Expressions[0].Value, smp.decisionID), nil
}

// copyNDB copies the recorded built-in answers: a candidate calling a
// built-in the active policy did not adds to its own copy, never to the
// logged one.
func copyNDB(in builtins.NDBCache) builtins.NDBCache {
	out := make(builtins.NDBCache, len(in))
	for k, v := range in {
		out[k] = v.Copy()
	}
	return out
}

// verdictOf is the answer Envoy gets for a decision (dry-run aside: the
// comparison is of what the policies decide). A decision buildResponse
// refuses is a failed Check, which the active side never is when sampled.
func verdictOf(result any, decisionID string) verdict {
	resp, err := buildResponse(result, decisionID, false)
	if err != nil {
		return verdict{}
	}
	v := verdict{allowed: resp.GetStatus().GetCode() == int32(codes.OK), status: 200}
	if d := resp.GetDeniedResponse(); d != nil {
		v.status = int(d.GetStatus().GetCode())
	}
	v.headers = make([]any, len(comparedHeaders))
	if d, ok := result.(map[string]any); ok {
		v.reasons = reasonsOf(d["reasons"])
		for _, r := range v.reasons {
			v.rules = append(v.rules, r.rule)
		}
		for i, name := range comparedHeaders {
			v.headers[i] = d[name]
		}
	}
	return v
}

func (v verdict) fields() map[string]any {
	return map[string]any{"allowed": v.allowed, "http_status": v.status, "rules": v.rules}
}

// classify is the change from the active answer to the candidate's.
func classify(active, cand verdict, err error) string {
	switch {
	case err != nil:
		return changeError
	case active.allowed && !cand.allowed:
		return changeAllowToDeny
	case !active.allowed && cand.allowed:
		return changeDenyToAllow
	case active.status != cand.status:
		return changeStatusChanged
	case !reflect.DeepEqual(active.headers, cand.headers):
		return changeHeadersChanged
	default:
		return changeUnchanged
	}
}

// startShadow starts the shadow block of the plugin's configuration.
func (p *Plugin) startShadow() {
	s := newShadow(p.manager, p.cfg.Shadow, p.cfg.query, p.decisions)
	s.start()
	p.shadow.Store(s)
}

func (p *Plugin) stopShadow(ctx context.Context) {
	p.shadow.Swap(nil).stop(ctx)
}
