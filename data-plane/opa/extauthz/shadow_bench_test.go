package extauthz

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/util"
)

// BenchmarkCheckShadow is a whole Check of the gateway policy with the
// shadow off and sampling 10 % against a candidate of the same policy (the
// worker running), in the same run. Besides ns/op it reports each Check's
// p99 (p99-ns), the figure the shadow's cost target is set on:
//
//	go test -run '^$' -bench CheckShadow -benchtime 20000x -count 3 ./extauthz
func BenchmarkCheckShadow(b *testing.B) {
	gateway, err := os.ReadFile("testdata/gateway.rego")
	if err != nil {
		b.Fatal(err)
	}
	var data map[string]any
	raw, err := os.ReadFile("testdata/gateway.json")
	if err != nil {
		b.Fatal(err)
	}
	if err := util.UnmarshalJSON(raw, &data); err != nil {
		b.Fatal(err)
	}
	for _, percent := range []float64{0, 10} {
		name := "off"
		if percent > 0 {
			name = "10pct"
		}
		b.Run(name, func(b *testing.B) {
			opa := newOPA(b, opaSetup{modules: map[string]string{"/bench/gateway.rego": string(gateway)},
				data: map[string]any{"bench": data}, roots: []string{"bench"}, noLog: true})
			p := opa.plugin(b, `{"path": "bench/gateway/decision"}`)
			if percent > 0 {
				s := benchShadow(b, opa, p, string(gateway), data, percent)
				defer s.stop(context.Background())
			}
			req := benchChat()
			ctx := context.Background()
			if _, err := p.Check(ctx, req); err != nil {
				b.Fatal(err)
			}
			took := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				if _, err := p.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)*99/100].Nanoseconds()), "p99-ns")
		})
	}
}

// benchShadow runs the worker against a candidate of the same gateway
// policy, activated as the downloader's callback would.
func benchShadow(b *testing.B, opa *testOPA, p *Plugin, gateway string, data map[string]any, percent float64) *shadow {
	cfg := &ShadowConfig{SamplePercent: percent, QueueSize: defaultShadowQueueSize, Bundle: "nexus"}
	s := newShadow(opa.manager, cfg, p.cfg.query, p.decisions)
	roots := []string{"bench"}
	c, err := s.activate(context.Background(), &bundle.Bundle{
		Manifest: bundle.Manifest{Revision: "bench-candidate", Roots: &roots},
		Data:     map[string]any{"bench": data},
		Modules:  []bundle.ModuleFile{moduleFile(b, "/bench/gateway.rego", gateway)},
	})
	if err != nil {
		b.Fatal(err)
	}
	s.current.Store(c)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.downloader = nil
	go s.work(ctx)
	p.shadow.Store(s)
	return s
}

// BenchmarkShadowOffer is what shadow adds to the request path itself: the
// sampling draw and, for a sampled Check, the non-blocking hand-off (the
// queue kept drained, as the worker does).
func BenchmarkShadowOffer(b *testing.B) {
	opa := newOPA(b, opaSetup{modules: map[string]string{"/nexus/authz.rego": testPolicy}, roots: []string{"nexus"}, noLog: true})
	p := opa.plugin(b, `{"path": "nexus/authz/decision"}`)
	s := newShadow(opa.manager, &ShadowConfig{SamplePercent: 10, QueueSize: defaultShadowQueueSize, Bundle: "nexus"}, p.cfg.query, p.decisions)
	s.current.Store(&candidate{revision: "bench"})
	go func() {
		for range s.queue {
		}
	}()
	defer close(s.queue)
	ev := &evaluation{decisionID: testDecisionID}
	b.ReportAllocs()
	for b.Loop() {
		s.offer(ev)
	}
}
