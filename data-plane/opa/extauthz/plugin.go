// Package extauthz answers Envoy's ext_authz v3 gRPC Check calls from the
// policy and data OPA already holds, so a gateway request is decided with no
// network call beyond Envoy -> OPA.
//
// The configuration key, the input document and the result shape follow the
// conventions of the upstream opa-envoy-plugin, so policies written for one
// run on the other:
//
//	input.attributes        the CheckRequest, as protojson encodes it
//	input.parsed_path       the decoded path split on "/", empty segments kept
//	input.parsed_query      the query string, each key mapped to its values
//	input.parsed_body       the body, when it is JSON and Envoy forwarded it
//	input.truncated_body    whether Envoy cut the body short
//	input.source_principal  the client certificate's principal, when there is one
//	input.nexus             facts the plugin computes (credential_sha256), input.go
//	input.version           {"ext_authz": "v3", "encoding": "protojson"}
//
// The decision is either a boolean or an object with `allowed` and, optionally,
// `headers`, `response_headers_to_add`, `request_headers_to_remove`,
// `query_parameters_to_remove`, `query_parameters_to_set`, `body`,
// `http_status` and `dynamic_metadata`. Every decision carries a fresh
// decision id in Envoy's dynamic metadata (`decision_id`) and in OPA's
// decision log, so the gateway and the audit log share one identifier.
//
// The data path of one Check reads top to bottom in check.go; the steps it
// calls live in input.go (request -> input) and response.go (decision ->
// Envoy's answer).
package extauthz

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"

	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
)

// stopGracePeriod bounds how long Stop waits for in-flight Checks.
const stopGracePeriod = 5 * time.Second

// New creates the plugin; it starts serving in Start.
func (Factory) New(m *plugins.Manager, config any) plugins.Plugin {
	p := &Plugin{manager: m, cfg: *config.(*Config), metrics: newCheckMetrics()}
	p.deliveries = newDeliveries(p.cfg.DeliveryEntries, p.cfg.deliveryTTL, func(result string) {
		p.metrics.deliveries.WithLabelValues(result).Inc()
	})
	p.receiptWriters = make(chan struct{}, maxReceiptWriters)
	p.limiter.Store(newLimiter(p.cfg.admission))
	if err := p.metrics.register(m.PrometheusRegister()); err != nil {
		m.Logger().Error("%s: metrics not registered: %v", PluginName, err)
	}
	p.storeReservations() // after register: the table reports to the registered gauge
	p.decisions = p.newDecisionMetrics()
	m.RegisterCompilerTrigger(p.compilerUpdated)
	m.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateNotReady})
	return p
}

// Plugin is the ext_authz gRPC server inside OPA.
type Plugin struct {
	authv3.UnimplementedAuthorizationServer

	manager   *plugins.Manager
	cfg       Config
	metrics   *checkMetrics
	decisions *decisionMetrics
	limiter   atomic.Pointer[limiter]
	// deliveries matches answers with Envoy's access log (delivery.go);
	// it outlives a reconfiguration, so answers in flight are still matched.
	deliveries     *deliveries
	receiptWriters chan struct{}
	shadow         atomic.Pointer[shadow]
	// reservations holds budget reservations (reservations.go); nil when
	// they are off.
	reservations atomic.Pointer[reservations]

	mu       sync.Mutex
	server   *grpc.Server
	addr     net.Addr
	prepared *rego.PreparedEvalQuery
	// labelsPrepared is the labels-path query (decisionmetrics.go).
	labelsPrepared *rego.PreparedEvalQuery
	labelsCache    labelsCache
}

func (p *Plugin) newDecisionMetrics() *decisionMetrics {
	m := newDecisionMetrics(p.cfg.MetricTenants)
	if err := m.register(p.manager.PrometheusRegister()); err != nil {
		p.manager.Logger().Error("%s: decision metrics not registered: %v", PluginName, err)
	}
	return m
}

// Start listens on the configured address and serves Check calls.
func (p *Plugin) Start(_ context.Context) error {
	lis, err := net.Listen("tcp", p.cfg.Addr)
	if err != nil {
		p.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateErr, Message: err.Error()})
		return fmt.Errorf("%s: listen on %s: %w", PluginName, p.cfg.Addr, err)
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(p.cfg.MaxRecvMsgSize))
	authv3.RegisterAuthorizationServer(srv, p)
	accesslogv3.RegisterAccessLogServiceServer(srv, &accessLogServer{p: p})

	p.mu.Lock()
	p.server = srv
	p.addr = lis.Addr()
	p.mu.Unlock()

	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			p.manager.Logger().Error("%s: serve: %v", PluginName, err)
			p.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateErr, Message: err.Error()})
		}
	}()
	p.startShadow()
	p.manager.Logger().Info("%s: serving ext_authz v3 and Envoy's access log service on %s, query %s", PluginName, lis.Addr(), p.cfg.query)
	p.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateOK})
	return nil
}

// Addr is the address the plugin listens on, once started (with port 0 in
// the configuration, the port the system chose).
func (p *Plugin) Addr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// Stop drains in-flight calls, then closes the listener.
func (p *Plugin) Stop(ctx context.Context) {
	p.mu.Lock()
	srv := p.server
	p.server = nil
	p.addr = nil
	p.mu.Unlock()
	if srv == nil {
		return
	}
	p.stopShadow(ctx)
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		srv.Stop()
	case <-time.After(stopGracePeriod):
		srv.Stop()
	}
	p.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateNotReady})
}

// Reconfigure restarts the server with the new configuration.
func (p *Plugin) Reconfigure(ctx context.Context, config any) {
	p.Stop(ctx)
	p.mu.Lock()
	p.cfg = *config.(*Config)
	p.prepared, p.labelsPrepared = nil, nil
	p.mu.Unlock()
	p.labelsCache.clear()
	p.limiter.Store(newLimiter(p.cfg.admission))
	p.storeReservations()
	p.decisions = p.newDecisionMetrics()
	if err := p.Start(ctx); err != nil {
		p.manager.Logger().Error("%s: reconfigure: %v", PluginName, err)
	}
}

// storeReservations sets up the reservation table the configuration asks
// for. A reconfiguration with the same settings keeps the holds: dropping
// them would admit a burst against figures they were counted in.
func (p *Plugin) storeReservations() {
	cfg := p.cfg.reservations
	if !cfg.enabled {
		p.reservations.Store(nil)
		p.metrics.reservations.Set(0)
		return
	}
	if current := p.reservations.Load(); current != nil && current.cfg == cfg {
		return
	}
	r := newReservations(cfg)
	r.gauge = p.metrics.reservations.Set
	p.reservations.Store(r)
}

// compilerUpdated drops the prepared query: it was compiled against the
// previous policy and would keep answering from it.
func (p *Plugin) compilerUpdated(storage.Transaction) {
	p.mu.Lock()
	p.prepared, p.labelsPrepared = nil, nil
	p.mu.Unlock()
	p.labelsCache.clear()
}

func (p *Plugin) preparedQuery(ctx context.Context) (*rego.PreparedEvalQuery, error) {
	return p.prepare(ctx, &p.prepared, p.cfg.query)
}

func (p *Plugin) labelsQuery(ctx context.Context) (*rego.PreparedEvalQuery, error) {
	return p.prepare(ctx, &p.labelsPrepared, p.cfg.labelsQuery)
}

// prepare compiles query once per policy, keeping it in *slot.
func (p *Plugin) prepare(ctx context.Context, slot **rego.PreparedEvalQuery, query string) (*rego.PreparedEvalQuery, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if *slot != nil {
		return *slot, nil
	}
	pq, err := rego.New(
		rego.Query(query),
		rego.Compiler(p.manager.GetCompiler()),
		rego.Store(p.manager.Store),
		rego.Runtime(p.manager.Info),
		rego.EnablePrintStatements(p.manager.EnablePrintStatements()),
		rego.PrintHook(p.manager.PrintHook()),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, err
	}
	*slot = &pq
	return *slot, nil
}
