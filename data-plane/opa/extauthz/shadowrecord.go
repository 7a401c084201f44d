package extauthz

// Shadow records: every outcome the shadow worker judges is written to the
// decision log as an event of its own, path ShadowPath, result in the
// contract's shape (schemas/shadow/shadow.schema.json). The audit intake
// keeps it as a leaf of kind "shadow" for the decision it names, so the
// control plane can count a candidate's outcomes from the log and gate a
// rollout wave on them.
//
// One record per outcome, not an aggregate per interval: each names the
// decision it shadows, which is what lets the intake take it only from the
// enforcer that made that decision, and the report sample decision ids.
// The fsync cost is already shared: the durable log commits every append
// waiting in one group with one fsync, and a record is written by the
// shadow worker, off the request path, after its decision was fsynced.
// The worker waits for its own append, so a slow disk slows the shadow
// (whose queue then drops samples, counted), never a Check.

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/server"
)

// ShadowPath is the decision log `path` of a shadow record, the
// contract's SHADOW_PATH.
const ShadowPath = "nexus/shadow"

// Bounds on what a shadow record copies from a decision, as the contract
// admits them.
const (
	maxShadowReasons  = 16
	maxShadowControls = 16
	maxShadowText     = 128
)

// shadowReason is a reason's rule id and the controls it evidences.
type shadowReason struct {
	rule     string
	controls []string
}

// shadowOutcome is one judged sample, as its record says it.
type shadowOutcome struct {
	sample            sample
	candidateRevision string
	activeRevision    string
	change            string
	active            verdict
	candidate         verdict
	err               error
	took              time.Duration
}

// writeRecord logs the outcome through OPA's decision log (to the durable
// log, with the enforcer's labels); a refusal is counted, never retried:
// the metric has the outcome either way.
func (s *shadow) writeRecord(ctx context.Context, o shadowOutcome) {
	logger := logs.Lookup(s.manager)
	if logger == nil {
		return
	}
	txn, err := s.manager.Store.NewTransaction(ctx)
	if err != nil {
		s.recordLost(o, err)
		return
	}
	defer s.manager.Store.Abort(ctx, txn)
	var result any = o.document()
	info := &server.Info{
		Txn:        txn,
		DecisionID: uuid.NewString(),
		Path:       ShadowPath,
		Timestamp:  time.Now(),
		Results:    &result,
	}
	if err := logger.Log(ctx, info); err != nil {
		s.recordLost(o, err)
	}
}

func (s *shadow) recordLost(o shadowOutcome, err error) {
	s.metrics.lost.Inc()
	s.manager.Logger().Error("%s: the shadow record of decision %s could not be logged: %v", PluginName, o.sample.decisionID, err)
}

// document is the record's result, in the contract's shape.
func (o shadowOutcome) document() map[string]any {
	doc := map[string]any{
		"decision_id":        o.sample.decisionID,
		"candidate_revision": bounded(o.candidateRevision),
		"active_revision":    bounded(o.activeRevision),
		"change":             o.change,
		"active":             o.active.document(),
		"eval_ns":            json.Number(strconv.FormatInt(o.took.Nanoseconds(), 10)),
	}
	if o.sample.labels.route != "" {
		doc["route"] = bounded(o.sample.labels.route)
	}
	if o.sample.labels.tool != "" {
		doc["tool"] = bounded(o.sample.labels.tool)
	}
	if o.err != nil {
		doc["error"] = errorCode(o.err)
	} else {
		doc["candidate"] = o.candidate.document()
	}
	return doc
}

func (v verdict) document() map[string]any {
	reasons := make([]any, 0, len(v.reasons))
	for _, r := range v.reasons {
		controls := make([]any, 0, len(r.controls))
		for _, c := range r.controls {
			controls = append(controls, c)
		}
		reasons = append(reasons, map[string]any{"rule": r.rule, "controls": controls})
	}
	return map[string]any{
		"allowed":     v.allowed,
		"http_status": json.Number(strconv.Itoa(v.status)),
		"reasons":     reasons,
	}
}

// reasonsOf reads a decision's reasons: rule ids and controls, bounded.
func reasonsOf(raw any) []shadowReason {
	list, _ := raw.([]any)
	var out []shadowReason
	for _, item := range list {
		if len(out) == maxShadowReasons {
			break
		}
		r, ok := item.(map[string]any)
		if !ok {
			continue
		}
		rule, ok := r["rule"].(string)
		if !ok || rule == "" {
			continue
		}
		reason := shadowReason{rule: bounded(rule)}
		controls, _ := r["controls"].([]any)
		for _, c := range controls {
			if c, ok := c.(string); ok && c != "" && len(reason.controls) < maxShadowControls {
				reason.controls = append(reason.controls, bounded(c))
			}
		}
		out = append(out, reason)
	}
	return out
}

// errorCode is the candidate's failure as one of the plugin's error codes
// (never its message, which may quote the input).
func errorCode(err error) string {
	if ce, ok := errors.AsType[*checkError](err); ok {
		return bounded(ce.Code)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "shadow_timeout"
	}
	return "shadow_failed"
}

func bounded(s string) string {
	if len(s) <= maxShadowText {
		return s
	}
	return strings.ToValidUTF8(s[:maxShadowText], "")
}
