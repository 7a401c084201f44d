package extauthz

import (
	"context"
	"errors"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// testPolicy is a small gateway policy: an allow with upstream headers for
// tenant acme on /v1/..., a refusal otherwise, and decisions that go wrong
// in each way a policy can.
const testPolicy = `package nexus.authz

# METADATA
# title: Tenant acme
# labels:
#   controls:
#     - SOC2:CC6.1
allow if input.attributes.request.http.headers["x-nexus-tenant"] == "acme"

default decision := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": {"error": "denied"},
	"reasons": [{"rule": "test.denied", "message": "not acme", "controls": ["SOC2:CC6.1"]}],
}

decision := {
	"allowed": true,
	"http_status": 200,
	"headers": {"x-first-segment": input.parsed_path[0]},
	"request_headers_to_remove": ["authorization"],
	"reasons": [],
} if allow

conflicting := {"allowed": true} if input.attributes.request.http.method == "POST"

conflicting := {"allowed": false} if input.parsed_path[0] == "v1"

malformed := {"allowed": "yes"}
`

// testMask mirrors the enforcers' mask: bodies and the credential never
// reach the log.
const testMask = `package system.log

mask contains "/input/attributes/request/http/body"

mask contains "/input/parsed_body"

mask contains {"op": "upsert", "path": "/input/attributes/request/http/headers/authorization", "value": "masked"}
`

const testRevision = "rev-0001"

// capturedLog is a decision-log sink OPA's logs plugin hands every event
// to, synchronously; refuse makes it fail as an unreachable audit would.
type capturedLog struct {
	mu      sync.Mutex
	events  []logs.EventV1
	refuse  error
	discard bool // count only, for benchmarks
	count   int
}

func (c *capturedLog) Start(context.Context) error      { return nil }
func (c *capturedLog) Stop(context.Context)             {}
func (c *capturedLog) Reconfigure(context.Context, any) {}

func (c *capturedLog) Log(_ context.Context, event logs.EventV1) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refuse != nil {
		return c.refuse
	}
	c.count++
	if !c.discard {
		c.events = append(c.events, event)
	}
	return nil
}

func (c *capturedLog) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

func (c *capturedLog) only(t testing.TB) logs.EventV1 {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.events) != 1 {
		t.Fatalf("%d decision-log events, want 1", len(c.events))
	}
	event := c.events[0]
	c.events = nil
	return event
}

// testOPA is an in-process OPA: a plugin manager over an in-memory store
// holding its modules and data as the activated bundle "nexus", with
// decision logs going to a capturedLog.
type testOPA struct {
	manager *plugins.Manager
	log     *capturedLog
}

// opaSetup is what a testOPA holds: modules by path, data, the bundle's
// roots, and whether decision logging is configured.
type opaSetup struct {
	modules  map[string]string
	data     map[string]any
	roots    []string
	noLog    bool
	registry prometheus.Registerer
	tracer   *sdktrace.TracerProvider
}

// newTestOPA holds testPolicy and testMask, and logs decisions.
func newTestOPA(t testing.TB) *testOPA {
	return newOPA(t, testSetup())
}

func testSetup() opaSetup {
	return opaSetup{
		modules: map[string]string{"/nexus/authz.rego": testPolicy, "/system/log/mask.rego": testMask},
		roots:   []string{"nexus", "system/log"},
	}
}

func newOPA(t testing.TB, setup opaSetup) *testOPA {
	t.Helper()
	ctx := context.Background()
	policy := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: testRevision, Roots: &setup.roots},
		Data:     setup.data,
	}
	if policy.Data == nil {
		policy.Data = map[string]any{}
	}
	for path, src := range setup.modules {
		policy.Modules = append(policy.Modules, moduleFile(t, path, src))
	}
	m, err := plugins.New([]byte(`{"labels": {"region": "test-1"}}`), "test", inmem.New(),
		plugins.InitBundles(map[string]*bundle.Bundle{"nexus": &policy}),
		plugins.Logger(logging.NewNoOpLogger()),
		plugins.ConsoleLogger(logging.NewNoOpLogger()),
		plugins.WithPrometheusRegister(setup.registry),
		plugins.WithTracerProvider(setup.tracer),
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Init(ctx); err != nil {
		t.Fatal(err)
	}
	opa := &testOPA{manager: m}
	if setup.noLog {
		return opa
	}
	opa.log = &capturedLog{}
	m.Register("captured_log", opa.log)
	logsConfig, err := logs.ParseConfig([]byte(`{"plugin": "captured_log"}`), nil, []string{"captured_log"})
	if err != nil {
		t.Fatal(err)
	}
	m.Register(logs.Name, logs.New(logsConfig, m))
	return opa
}

// plugin is the ext_authz plugin on this OPA, configured by raw (the
// plugin's configuration block), not started.
func (o *testOPA) plugin(t testing.TB, raw string) *Plugin {
	t.Helper()
	cfg, err := Factory{}.Validate(o.manager, []byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return Factory{}.New(o.manager, cfg).(*Plugin)
}

// moduleFile parses a module as OPA's bundle loader does, METADATA
// included (rule_labels come from it).
func moduleFile(t testing.TB, path, src string) bundle.ModuleFile {
	t.Helper()
	parsed, err := ast.ParseModuleWithOpts(path, src, ast.ParserOptions{ProcessAnnotation: true})
	if err != nil {
		t.Fatal(err)
	}
	return bundle.ModuleFile{URL: path, Path: path, Raw: []byte(src), Parsed: parsed}
}

var errAuditUnreachable = errors.New("audit service unreachable")
