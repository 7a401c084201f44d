package extauthz

import (
	"context"
	"errors"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
)

// evaluation is one Check call's trip through the policy, kept whole so the
// decision log records exactly what was decided.
type evaluation struct {
	decisionID string
	started    time.Time
	inputAST   ast.Value
	result     any
	err        error
	refused    *refusal
	metrics    metrics.Metrics
	tracker    *topdown.EvaluatedRuleTracker
	ndbCache   builtins.NDBCache
	labels     decisionLabels
	// held: a budget reservation is held for this decision
	// (reservations.go), to be dropped if the answer is never sent.
	held bool
}

// Check decides one request, top to bottom: admission (admission.go), the
// input (input.go, body.go), the policy, Envoy's answer (response.go), the
// decision log. It fails closed: a failure is returned to Envoy as a gRPC
// error with a named code (errors.go), which Envoy (failure_mode_allow:
// false) refuses; a request the plugin refuses itself, malformed or shed
// (refusal.go), is answered with an ordinary refusal. Either way the
// decision log records it, and a decision it cannot record is not made.
func (p *Plugin) Check(ctx context.Context, req *authv3.CheckRequest) (resp *authv3.CheckResponse, err error) {
	ev := &evaluation{
		decisionID: uuid.NewString(),
		started:    time.Now(),
		metrics:    metrics.New(),
		tracker:    &topdown.EvaluatedRuleTracker{},
		ndbCache:   builtins.NDBCache{},
	}
	defer func() {
		result := outcome(ev, resp, err)
		p.metrics.checks.WithLabelValues(result).Inc()
		p.decisions.observe(ev, result, tenantOf(req))
	}()
	ctx, span := p.startCheckSpan(ctx, req)
	defer func() { endCheckSpan(span, ev, resp, err) }()

	gate := p.limiter.Load()
	release, waited, shed := gate.admit(ctx)
	p.metrics.queueDelay.Observe(waited.Seconds())
	if shed != "" {
		p.metrics.shed.WithLabelValues(shed).Inc()
	} else {
		p.metrics.inFlight.Inc()
		defer func() {
			release()
			p.metrics.inFlight.Dec()
		}()
	}

	// The log outlives a cancelled Check: Envoy may have given up, but
	// the decision was made (or the request shed) and the audit trail
	// must hold it.
	logCtx := context.WithoutCancel(ctx)
	txn, err := p.manager.Store.NewTransaction(logCtx)
	if err != nil {
		return nil, newCheckError(codes.Unavailable, CodeStartTxn, "no read transaction on OPA's store", err)
	}
	defer p.manager.Store.Abort(logCtx, txn)

	opts := p.cfg.inputOptions()
	if shed != "" {
		// Nothing reads the body of a shed request: the refusal stays cheap.
		opts.skipBodyParse = true
	}
	input, err := buildInput(req, opts)
	ev.inputAST = input
	refused, isRefusal := errors.AsType[*refusal](err)
	switch {
	case shed != "":
		ev.refused = gate.shedRefusal(shed)
	case isRefusal:
		ev.refused = refused
	case err != nil:
		ev.err = err
	default:
		ev.err = p.evaluate(ctx, txn, ev)
		if ev.err == nil {
			resp, ev.err = buildResponse(ev.result, ev.decisionID, p.cfg.DryRun)
		}
	}
	if ev.refused == nil && ctx.Err() != nil {
		// Envoy gave up while the policy ran (its ext_authz timeout): no
		// answer reaches the client, so the log records the request as
		// abandoned (a shed outcome), not as a decision made.
		ev.refused, ev.err = gate.shedRefusal(shedAbandoned), nil
		p.metrics.shed.WithLabelValues(shedAbandoned).Inc()
	}
	if ev.refused == nil && ev.err == nil {
		ev.refused, ev.err = p.holdBudget(req, ev)
	}
	if ev.refused != nil {
		resp = ev.refused.response(ev.decisionID, p.cfg.DryRun)
	}
	ev.labels = p.labelsOf(logCtx, txn, ev, req)

	logStarted := time.Now()
	logErr := p.logDecision(logCtx, txn, ev, remoteAddr(ctx))
	p.metrics.logDuration.Observe(time.Since(logStarted).Seconds())
	if ev.held && (logErr != nil || ev.err != nil) {
		p.reservations.Load().cancel(ev.decisionID)
	}
	if logErr != nil {
		// Unavailable (Envoy answers 503): the enforcer cannot record, so
		// it does not decide; the cause (e.g. a full disk) is in the message.
		return nil, newCheckError(codes.Unavailable, CodeDecisionLog, "the decision log could not record the decision: "+logErr.Error(), logErr)
	}
	if ev.err != nil {
		return nil, ev.err
	}
	p.recordAnswer(req, ev, resp)
	if ev.refused == nil {
		p.shadow.Load().offer(ev)
	}
	return resp, nil
}

func outcome(ev *evaluation, resp *authv3.CheckResponse, err error) string {
	switch {
	case err != nil:
		return outcomeError
	case ev.refused != nil && ev.refused.shed != "":
		return outcomeShed
	case ev.refused != nil && ev.refused.reservation != nil:
		return outcomeReservation
	case ev.refused != nil:
		return outcomeRefused
	case resp.GetStatus().GetCode() == int32(codes.OK):
		return outcomeAllowed
	default:
		return outcomeDenied
	}
}

func (p *Plugin) evaluate(ctx context.Context, txn storage.Transaction, ev *evaluation) error {
	pq, err := p.preparedQuery(ctx)
	if err != nil {
		return evalError(err)
	}
	rs, err := pq.Eval(ctx,
		rego.EvalParsedInput(ev.inputAST),
		rego.EvalTransaction(txn),
		rego.EvalMetrics(ev.metrics),
		rego.EvalEvaluatedRuleTracker(ev.tracker),
		rego.EvalNDBuiltinCache(ev.ndbCache),
	)
	if err != nil {
		return evalError(err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return errUndefined
	}
	ev.result = rs[0].Expressions[0].Value
	return nil
}

func (p *Plugin) logDecision(ctx context.Context, txn storage.Transaction, ev *evaluation, remote string) error {
	logger := logs.Lookup(p.manager)
	if logger == nil {
		return nil
	}
	revisions, err := bundleRevisions(ctx, p.manager.Store, txn)
	if err != nil {
		return err
	}
	var ndb any = ev.ndbCache
	info := &server.Info{
		Txn:                 txn,
		Bundles:             revisions,
		DecisionID:          ev.decisionID,
		RemoteAddr:          remote,
		Path:                p.cfg.Path,
		Timestamp:           ev.started,
		Error:               loggedError(ev.err),
		Metrics:             ev.metrics,
		NDBuiltinCache:      &ndb,
		EvaluatedRuleLabels: ev.tracker.Labels,
	}
	if ev.inputAST != nil {
		// The log's plain copy of the input is OPA's to mask (in place)
		// and encode; the policy evaluated the value itself.
		input, err := ast.JSON(ev.inputAST)
		if err != nil {
			return err
		}
		info.Input = &input
		info.InputAST = ev.inputAST
	}
	switch {
	case ev.refused != nil:
		var decision any = ev.refused.decision()
		info.Results = &decision
		info.Error = ev.refused.loggedError()
	case ev.err == nil:
		info.Results = &ev.result
	}
	return logger.Log(ctx, info)
}

func bundleRevisions(ctx context.Context, store storage.Store, txn storage.Transaction) (map[string]server.BundleInfo, error) {
	names, err := bundle.ReadBundleNamesFromStore(ctx, store, txn)
	if err != nil && !storage.IsNotFound(err) {
		return nil, err
	}
	out := make(map[string]server.BundleInfo, len(names))
	for _, name := range names {
		rev, err := bundle.ReadBundleRevisionFromStore(ctx, store, txn, name)
		if err != nil && !storage.IsNotFound(err) {
			return nil, err
		}
		out[name] = server.BundleInfo{Revision: rev}
	}
	return out, nil
}

func remoteAddr(ctx context.Context) string {
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		return pr.Addr.String()
	}
	return ""
}
