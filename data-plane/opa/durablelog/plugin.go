// Package durablelog is a decision-log plugin for OPA that loses no
// decision when OPA dies: OPA's decision_logs plugin hands it each event
// (`decision_logs.plugin: nexus_durable_log`); it appends the event to a
// local segment (segment.go) with group-committed fsync (journal.go) and,
// by default, answers only once the event is on disk, so the ext_authz
// answer never leaves before its record. Sealed segments are shipped to
// the audit intake in OPA's own upload format and deleted only after a
// 2xx (shipper.go).
package durablelog

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/plugins/rest"
)

// New creates the plugin; Start recovers the segments and starts writing.
func (Factory) New(m *plugins.Manager, config any) plugins.Plugin {
	cfg := config.(*Config)
	p := &Plugin{manager: m, cfg: cfg, open: openSegmentFile}
	p.metrics = newLogMetrics(p.oldestUnshipped)
	if err := p.metrics.register(m.PrometheusRegister()); err != nil {
		m.Logger().Error("%s: metrics not registered: %v", PluginName, err)
	}
	m.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateNotReady})
	return p
}

// Plugin is the durable decision log.
type Plugin struct {
	manager *plugins.Manager
	cfg     *Config
	open    openFunc
	metrics *logMetrics
	// sleep is the shipper's backoff wait; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error

	mu      sync.RWMutex
	stopped bool
	journal *journal
	cancel  context.CancelFunc
	shipped chan struct{}
}

var _ logs.Logger = (*Plugin)(nil)

// Start creates the segment directory (0700), truncates any torn tail a
// crash left, and starts the journal and the shipper.
func (p *Plugin) Start(_ context.Context) error {
	if err := p.start(); err != nil {
		p.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateErr, Message: err.Error()})
		return fmt.Errorf("%s: %w", PluginName, err)
	}
	p.manager.Logger().Info("%s: recording decisions in %s (answers wait for: %s, unless a decision says otherwise)", PluginName, p.cfg.Dir, p.cfg.waitFor)
	p.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateOK})
	return nil
}

func (p *Plugin) start() error {
	if err := os.MkdirAll(p.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("cannot create the segment directory: %w", err)
	}
	if err := os.Chmod(p.cfg.Dir, 0o700); err != nil { // #nosec G302 -- a directory needs its search bit; 0700 is owner-only
		return err
	}
	segments, err := listSegments(p.cfg.Dir)
	if err != nil {
		return err
	}
	var next uint64 = 1
	buffered := 0
	for _, seg := range segments {
		scan, err := scanSegment(seg.path)
		if err != nil {
			return err
		}
		if scan.torn {
			p.manager.Logger().Warn("%s: %s: torn tail after %d bytes (a crash mid-write), truncated", PluginName, seg.path, scan.good)
			if err := repairSegment(seg.path, scan.good); err != nil {
				return err
			}
		}
		buffered += len(scan.records)
		next = seg.seq + 1
	}
	p.metrics.buffered.Set(float64(buffered))

	l := p.manager.Logger()
	j := newJournal(p.cfg.Dir, next, p.open, p.cfg, p.metrics, l)
	sleep := p.sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	s := &shipper{
		dir:     p.cfg.Dir,
		client:  func() rest.Client { return p.manager.Client(p.cfg.Service) },
		active:  &j.active,
		wake:    j.sealed,
		cfg:     p.cfg,
		metrics: p.metrics,
		logger:  l,
		sleep:   sleep,
	}
	ctx, cancel := context.WithCancel(context.Background())
	shipped := make(chan struct{})
	p.mu.Lock()
	p.journal, p.cancel, p.shipped, p.stopped = j, cancel, shipped, false
	p.mu.Unlock()
	go j.run()
	go func() {
		defer close(shipped)
		s.run(ctx)
	}()
	return nil
}

// Stop commits what is queued, seals the active segment and stops
// shipping; what is not shipped yet ships after the next Start.
func (p *Plugin) Stop(_ context.Context) {
	p.mu.Lock()
	if p.stopped || p.journal == nil {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	j, cancel, shipped := p.journal, p.cancel, p.shipped
	p.mu.Unlock()
	close(j.stop)
	<-j.done
	cancel()
	<-shipped
	p.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateNotReady})
}

// Reconfigure keeps the running journal: a new directory or service takes
// effect at the next start (moving segments under a running journal could
// lose them).
func (p *Plugin) Reconfigure(_ context.Context, config any) {
	p.manager.Logger().Warn("%s: configuration changes take effect when OPA restarts", PluginName)
	_ = config
}

// Log records one decision event. Unless wait_for_commit is off, it
// returns only once the event is fsynced; an error (a full disk, a failed
// write) reaches the ext_authz plugin, which refuses the request.
func (p *Plugin) Log(_ context.Context, event logs.EventV1) error {
	payload, err := json.Marshal(&event)
	if err != nil {
		return fmt.Errorf("%s: cannot encode decision %s: %w", PluginName, event.DecisionID, err)
	}
	if len(payload) > maxRecordBytes {
		return fmt.Errorf("%s: decision %s is %d bytes, more than a record holds (%d)", PluginName, event.DecisionID, len(payload), maxRecordBytes)
	}
	done := make(chan error, 1)
	p.mu.RLock()
	if p.stopped || p.journal == nil {
		p.mu.RUnlock()
		return errStopped
	}
	level := waitFor(event, p.cfg.waitFor)
	p.journal.reqs <- appendReq{payload: payload, level: level, done: done}
	p.mu.RUnlock()
	p.metrics.appended.WithLabelValues(level.String()).Inc()
	if level == waitNone {
		return nil
	}
	return <-done
}

// waitFor is how far this decision goes before its answer: the decision's
// own `decision_log.wait_for` when its result carries one (the policy sets
// it from the tenant's signed spec, so a tenant's choice is reviewed like
// any policy change), else the enforcer's default. Events of other kinds
// (receipts) follow the default.
func waitFor(event logs.EventV1, fallback waitLevel) waitLevel {
	if event.Result == nil {
		return fallback
	}
	result, ok := (*event.Result).(map[string]any)
	if !ok {
		return fallback
	}
	choice, ok := result[decisionLogKey].(map[string]any)
	if !ok {
		return fallback
	}
	name, _ := choice[waitForKey].(string)
	if level, known := waitLevels[name]; known {
		return level
	}
	return fallback
}

// Where a decision result states its tenant's choice (the contract's
// decision-result schema, `decision_log`).
const (
	decisionLogKey = "decision_log"
	waitForKey     = "wait_for"
)

// oldestUnshipped is when the oldest segment on disk was created.
func (p *Plugin) oldestUnshipped() time.Time {
	segments, err := listSegments(p.cfg.Dir)
	if err != nil || len(segments) == 0 {
		return time.Time{}
	}
	return segments[0].created
}
