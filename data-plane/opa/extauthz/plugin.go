// Package extauthz answers Envoy's ext_authz v3 gRPC Check calls from the
// policy and data OPA already holds, so a gateway request is decided with no
// network call beyond Envoy -> OPA.
//
// The configuration key, the input document and the result shape follow the
// conventions of the upstream opa-envoy-plugin, so policies written for one
// run on the other:
//
//	input.attributes      the CheckRequest, protojson-encoded
//	input.parsed_path     the request path split on "/"
//	input.parsed_query    the query string, each key mapped to its values
//	input.parsed_body     the body, when it is JSON and Envoy forwarded it
//	input.truncated_body  whether Envoy cut the body short
//
// The decision is either a boolean or an object with `allowed` and, optionally,
// `headers`, `response_headers_to_add`, `request_headers_to_remove`, `body`,
// `http_status` and `dynamic_metadata`. Every decision carries a fresh
// decision id in Envoy's dynamic metadata (`decision_id`) and in OPA's
// decision log, so the gateway and the audit log share one identifier.
package extauthz

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
	"github.com/open-policy-agent/opa/v1/util"
)

// PluginName is the key under `plugins` in OPA's configuration.
const PluginName = "envoy_ext_authz_grpc"

const (
	defaultAddr           = ":9191"
	defaultPath           = "envoy/authz/allow"
	defaultMaxRecvMsgSize = 4 * 1024 * 1024
	stopGracePeriod       = 5 * time.Second
)

// Config is the plugin's configuration block.
type Config struct {
	Addr                 string `json:"addr"`
	Path                 string `json:"path"`
	DryRun               bool   `json:"dry-run"`
	SkipRequestBodyParse bool   `json:"skip-request-body-parse"`
	MaxRecvMsgSize       int    `json:"grpc-max-recv-msg-size"`

	query string
}

// Factory validates configuration and creates the plugin.
type Factory struct{}

// Validate parses the plugin's configuration and fills in defaults.
func (Factory) Validate(_ *plugins.Manager, raw []byte) (any, error) {
	cfg := Config{Addr: defaultAddr, Path: defaultPath, MaxRecvMsgSize: defaultMaxRecvMsgSize}
	if err := util.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", PluginName, err)
	}
	if cfg.Addr == "" {
		return nil, fmt.Errorf("%s: addr must not be empty", PluginName)
	}
	if cfg.MaxRecvMsgSize <= 0 {
		return nil, fmt.Errorf("%s: grpc-max-recv-msg-size must be positive", PluginName)
	}
	ref, err := ast.PtrRef(ast.DefaultRootDocument, cfg.Path)
	if err != nil || len(ref) < 2 {
		return nil, fmt.Errorf("%s: path %q does not name a document under data", PluginName, cfg.Path)
	}
	cfg.query = ref.String()
	return &cfg, nil
}

// New creates the plugin; it starts serving in Start.
func (Factory) New(m *plugins.Manager, config any) plugins.Plugin {
	p := &Plugin{manager: m, cfg: *config.(*Config)}
	m.RegisterCompilerTrigger(p.compilerUpdated)
	m.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateNotReady})
	return p
}

// Plugin is the ext_authz gRPC server inside OPA.
type Plugin struct {
	authv3.UnimplementedAuthorizationServer

	manager *plugins.Manager
	cfg     Config

	mu       sync.Mutex
	server   *grpc.Server
	prepared *rego.PreparedEvalQuery
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

	p.mu.Lock()
	p.server = srv
	p.mu.Unlock()

	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			p.manager.Logger().Error("%s: serve: %v", PluginName, err)
			p.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateErr, Message: err.Error()})
		}
	}()
	p.manager.Logger().Info("%s: serving ext_authz v3 on %s, query %s", PluginName, p.cfg.Addr, p.cfg.query)
	p.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateOK})
	return nil
}

// Stop drains in-flight calls, then closes the listener.
func (p *Plugin) Stop(ctx context.Context) {
	p.mu.Lock()
	srv := p.server
	p.server = nil
	p.mu.Unlock()
	if srv == nil {
		return
	}
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
	p.prepared = nil
	p.mu.Unlock()
	if err := p.Start(ctx); err != nil {
		p.manager.Logger().Error("%s: reconfigure: %v", PluginName, err)
	}
}

// compilerUpdated drops the prepared query: it was compiled against the
// previous policy and would keep answering from it.
func (p *Plugin) compilerUpdated(storage.Transaction) {
	p.mu.Lock()
	p.prepared = nil
	p.mu.Unlock()
}

func (p *Plugin) preparedQuery(ctx context.Context) (*rego.PreparedEvalQuery, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.prepared != nil {
		return p.prepared, nil
	}
	pq, err := rego.New(
		rego.Query(p.cfg.query),
		rego.Compiler(p.manager.GetCompiler()),
		rego.Store(p.manager.Store),
		rego.Runtime(p.manager.Info),
		rego.EnablePrintStatements(p.manager.EnablePrintStatements()),
		rego.PrintHook(p.manager.PrintHook()),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, err
	}
	p.prepared = &pq
	return p.prepared, nil
}

// evaluation is one Check call's trip through the policy, kept whole so the
// decision log records exactly what was decided.
type evaluation struct {
	decisionID string
	started    time.Time
	input      map[string]any
	inputAST   ast.Value
	result     any
	err        error
	metrics    metrics.Metrics
	tracker    *topdown.EvaluatedRuleTracker
	ndbCache   builtins.NDBCache
}

// Check decides one request. It fails closed: any error is returned to
// Envoy as a gRPC error, which Envoy (failure_mode_allow: false) refuses.
func (p *Plugin) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	ev := &evaluation{
		decisionID: uuid.NewString(),
		started:    time.Now(),
		metrics:    metrics.New(),
		tracker:    &topdown.EvaluatedRuleTracker{},
		ndbCache:   builtins.NDBCache{},
	}

	input, err := buildInput(req, p.cfg.SkipRequestBodyParse)
	if err != nil {
		return nil, grpcstatus.Error(codes.InvalidArgument, err.Error())
	}
	ev.input = input
	if ev.inputAST, err = ast.InterfaceToValue(input); err != nil {
		return nil, grpcstatus.Error(codes.InvalidArgument, err.Error())
	}

	txn, err := p.manager.Store.NewTransaction(ctx)
	if err != nil {
		return nil, grpcstatus.Error(codes.Unavailable, err.Error())
	}
	defer p.manager.Store.Abort(ctx, txn)

	ev.err = p.evaluate(ctx, txn, ev)

	var resp *authv3.CheckResponse
	if ev.err == nil {
		resp, ev.err = buildResponse(ev.result, ev.decisionID, p.cfg.DryRun)
	}
	if logErr := p.logDecision(ctx, txn, ev, remoteAddr(ctx)); logErr != nil {
		// A decision the audit trail cannot record is not made.
		return nil, grpcstatus.Error(codes.Internal, "decision log: "+logErr.Error())
	}
	if ev.err != nil {
		return nil, grpcstatus.Error(codes.Internal, ev.err.Error())
	}
	return resp, nil
}

var errUndefined = errors.New("decision is undefined: the policy must give the decision a default")

func (p *Plugin) evaluate(ctx context.Context, txn storage.Transaction, ev *evaluation) error {
	pq, err := p.preparedQuery(ctx)
	if err != nil {
		return err
	}
	rs, err := pq.Eval(ctx,
		rego.EvalParsedInput(ev.inputAST),
		rego.EvalTransaction(txn),
		rego.EvalMetrics(ev.metrics),
		rego.EvalEvaluatedRuleTracker(ev.tracker),
		rego.EvalNDBuiltinCache(ev.ndbCache),
	)
	if err != nil {
		return err
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
	var input any = ev.input
	var ndb any = ev.ndbCache
	info := &server.Info{
		Txn:                 txn,
		Bundles:             revisions,
		DecisionID:          ev.decisionID,
		RemoteAddr:          remote,
		Path:                p.cfg.Path,
		Timestamp:           ev.started,
		Input:               &input,
		InputAST:            ev.inputAST,
		Error:               ev.err,
		Metrics:             ev.metrics,
		NDBuiltinCache:      &ndb,
		EvaluatedRuleLabels: ev.tracker.Labels,
	}
	if ev.err == nil {
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
