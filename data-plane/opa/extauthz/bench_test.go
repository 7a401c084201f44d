package extauthz

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// Benchmarks of one Check's steps and of whole Checks, for a shared
// machine run them briefly, e.g.
//
//	go test -run '^$' -bench . -benchtime 2000x -count 5 ./extauthz
//
// They print ns/op and allocs/op; speed goals are read from the figures,
// never asserted.

// benchChat is a chat completion as Envoy forwards it: pseudo-headers and
// the usual proxy headers included, a body of about 1 KiB.
func benchChat() *authv3.CheckRequest {
	messages := make([]map[string]string, 0, 6)
	for i := range 6 {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		messages = append(messages, map[string]string{"role": role, "content": strings.Repeat("lorem ipsum dolor sit amet ", 6)})
	}
	body, err := json.Marshal(map[string]any{"model": "gpt-4o", "messages": messages, "temperature": 0.2, "max_tokens": 512})
	if err != nil {
		panic(err)
	}
	return httpCheck("POST", "/v1/chat/completions", benchHeaders(map[string]string{
		"x-nexus-model":  "gpt-4o",
		"content-length": strconv.Itoa(len(body)),
	}), string(body))
}

// benchTool is a tool call with a small argument object.
func benchTool() *authv3.CheckRequest {
	body := `{"arguments":{"query":"open policy agent envoy","limit":10,"safe":true}}`
	return httpCheck("POST", "/v1/tools/web-search:invoke", benchHeaders(map[string]string{
		"content-length": strconv.Itoa(len(body)),
	}), body)
}

func benchHeaders(extra map[string]string) map[string]string {
	headers := map[string]string{
		":authority":        "gateway.nexus.local",
		":method":           "POST",
		":path":             "/v1/chat/completions",
		":scheme":           "http",
		"accept":            "application/json",
		"authorization":     "Bearer nx_bench_key",
		"content-type":      "application/json",
		"user-agent":        "nexus-sdk/1.4.2 python/3.13",
		"x-forwarded-proto": "http",
		"x-nexus-tenant":    "acme",
		"x-nexus-feature":   "support-chat",
		"x-request-id":      "8d0f2c1e-6b7a-4a47-9d55-0c1f3e0d9a21",
	}
	for k, v := range extra {
		headers[k] = v
	}
	return headers
}

var benchRequests = []struct {
	name string
	req  func() *authv3.CheckRequest
}{
	{"chat", benchChat},
	{"tool", benchTool},
}

// BenchmarkInput is the input construction of one Check: the CheckRequest
// made into the policy's input value and the decision log's plain value.
func BenchmarkInput(b *testing.B) {
	for _, r := range benchRequests {
		b.Run(r.name, func(b *testing.B) {
			req := r.req()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := benchConstructInput(req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkResponse is the construction of Envoy's answer from a decision
// of the gateway policy's shape.
func BenchmarkResponse(b *testing.B) {
	decisions := []struct{ name, decision string }{
		{"allow", `{"allowed": true, "http_status": 200, "headers": {"x-nexus-route-model": "gpt-4.1", "x-nexus-prompt-version": "3"},
			"response_headers_to_add": {"x-nexus-budget-warning": "tenant=85%"}, "request_headers_to_remove": ["authorization", "x-nexus-approval"],
			"body": "", "reasons": []}`},
		{"deny", `{"allowed": false, "http_status": 403, "headers": {"content-type": "application/json"}, "response_headers_to_add": {},
			"request_headers_to_remove": [], "body": "{\"error\":\"denied\",\"reasons\":[{\"controls\":[\"SOC2:CC6.1\"],\"message\":\"m\",\"rule\":\"r\"}]}",
			"reasons": [{"rule": "r", "message": "m", "controls": ["SOC2:CC6.1"]}]}`},
	}
	for _, d := range decisions {
		b.Run(d.name, func(b *testing.B) {
			decision := jsonValue(b, d.decision)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := buildResponse(decision, testDecisionID, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

const nopPolicy = `package bench.nop

decision := {"allowed": true}
`

// benchMask is the shape of the enforcers' mask policy: a few removals
// and the credential replaced by a fingerprint.
const benchMask = `package system.log

request_path := "/input/attributes/request/http"

mask contains path if {
	some field in ["body", "rawBody", "headerMap"]
	path := concat("/", [request_path, field])
}

mask contains "/input/parsed_body"

mask contains "/input/parsed_query"

mask contains {"op": "upsert", "path": concat("/", [request_path, "headers", "authorization"]), "value": fingerprint} if {
	fingerprint := substring(crypto.sha256(input.input.attributes.request.http.headers.authorization), 0, 16)
}
`

// BenchmarkCheck is one whole Check against an in-process OPA, without and
// with decision logging (to a sink that drops the events after OPA's
// masking): a NOP policy, and a small realistic gateway policy.
func BenchmarkCheck(b *testing.B) {
	gateway, err := os.ReadFile("testdata/gateway.rego")
	if err != nil {
		b.Fatal(err)
	}
	var gatewayData map[string]any
	raw, err := os.ReadFile("testdata/gateway.json")
	if err != nil {
		b.Fatal(err)
	}
	if err := util.UnmarshalJSON(raw, &gatewayData); err != nil {
		b.Fatal(err)
	}
	policies := []struct {
		name, path string
		modules    map[string]string
		data       map[string]any
	}{
		{"nop", "bench/nop/decision", map[string]string{"/bench/nop.rego": nopPolicy}, nil},
		{"gateway", "bench/gateway/decision", map[string]string{"/bench/gateway.rego": string(gateway)}, map[string]any{"bench": gatewayData}},
	}
	for _, policy := range policies {
		for _, logged := range []bool{false, true} {
			name := policy.name
			modules := map[string]string{}
			for k, v := range policy.modules {
				modules[k] = v
			}
			roots := []string{"bench"}
			if logged {
				name += "-logged"
				modules["/system/log/mask.rego"] = benchMask
				roots = append(roots, "system/log")
			}
			b.Run(name, func(b *testing.B) {
				opa := newOPA(b, opaSetup{modules: modules, data: policy.data, roots: roots, noLog: !logged})
				if logged {
					opa.log.discard = true
				}
				p := opa.plugin(b, `{"path": "`+policy.path+`"}`)
				req := benchChat()
				ctx := context.Background()
				resp, err := p.Check(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				if resp.GetOkResponse() == nil {
					b.Fatalf("the benchmark request is not allowed: %v", resp)
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := p.Check(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// benchConstructInput is what Check does before evaluating: the input
// value for the policy, and the plain value the decision log masks.
func benchConstructInput(req *authv3.CheckRequest) (ast.Value, error) {
	input, err := buildInput(req, defaultInputOptions)
	if err != nil {
		return nil, err
	}
	_, err = ast.JSON(input)
	return input, err
}

// BenchmarkShed is a shed Check (every slot taken), without and with the
// labels-path document that names its capability for the SLO metrics: the
// labels' cost on the path that must stay cheap under overload.
func BenchmarkShed(b *testing.B) {
	for _, labelled := range []bool{false, true} {
		name, raw := "unlabelled", `{"path": "nexus/authz/decision", "admission": {"max-in-flight": 1, "max-queue-wait-ms": 0}}`
		if labelled {
			name, raw = "labels-path", `{"path": "nexus/authz/decision", "labels-path": "nexus/authz/labels", "admission": {"max-in-flight": 1, "max-queue-wait-ms": 0}}`
		}
		b.Run(name, func(b *testing.B) {
			setup := testSetup()
			setup.modules = map[string]string{"/nexus/authz.rego": labelledPolicy}
			setup.noLog = true
			p := newOPA(b, setup).plugin(b, raw)
			ctx := context.Background()
			release, _, shed := p.limiter.Load().admit(ctx)
			if shed != "" {
				b.Fatal("the one slot was not free")
			}
			defer release()
			req := benchChat()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
