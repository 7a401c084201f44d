package extauthz

import (
	"errors"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/open-policy-agent/opa/v1/ast"
)

// absent marks a top-level input key the document must not have.
const absent = "<absent>"

func TestInputIsBuiltFromTheCheckRequest(t *testing.T) {
	jsonHeaders := map[string]string{"content-type": "application/json"}
	cases := []struct {
		name     string
		req      func() *authv3.CheckRequest
		skipBody bool
		// want maps top-level input keys to their JSON, or to absent.
		want map[string]string
	}{
		{
			name: "path split into segments",
			req:  func() *authv3.CheckRequest { return httpCheck("POST", "/v1/chat/completions", nil, "") },
			want: map[string]string{
				"parsed_path":    `["v1","chat","completions"]`,
				"parsed_query":   `{}`,
				"truncated_body": `false`,
				"parsed_body":    `null`,
				"version":        `{"encoding":"protojson","ext_authz":"v3"}`,
				"nexus":          `{}`,
			},
		},
		{
			name: "JSON body parsed, numbers kept as written",
			req: func() *authv3.CheckRequest {
				return httpCheck("POST", "/v1/tools/web-search:invoke", jsonHeaders, `{"arguments":{"query":"opa","limit":1.0}}`)
			},
			want: map[string]string{
				"parsed_body":    `{"arguments":{"limit":1.0,"query":"opa"}}`,
				"truncated_body": `false`,
			},
		},
		{
			name: "JSON body with a charset parameter",
			req: func() *authv3.CheckRequest {
				return httpCheck("POST", "/v1/chat/completions", map[string]string{"content-type": "application/json; charset=utf-8"}, `[1,2]`)
			},
			want: map[string]string{"parsed_body": `[1,2]`},
		},
		{
			name: "structured +json media type",
			req: func() *authv3.CheckRequest {
				return httpCheck("POST", "/v1/chat/completions", map[string]string{"content-type": "application/merge-patch+json"}, `{"a":null}`)
			},
			want: map[string]string{"parsed_body": `{"a":null}`},
		},
		{
			name: "raw_body when Envoy packs the body as bytes",
			req: func() *authv3.CheckRequest {
				req := httpCheck("POST", "/v1/tools/web-search:invoke", jsonHeaders, "")
				req.Attributes.Request.Http.RawBody = []byte(`{"arguments":{}}`)
				return req
			},
			want: map[string]string{"parsed_body": `{"arguments":{}}`},
		},
		{
			name: "body wins over raw_body, as upstream",
			req: func() *authv3.CheckRequest {
				req := httpCheck("POST", "/v1/tools/web-search:invoke", jsonHeaders, `{"from":"body"}`)
				req.Attributes.Request.Http.RawBody = []byte(`{"from":"raw_body"}`)
				return req
			},
			want: map[string]string{"parsed_body": `{"from":"body"}`},
		},
		{
			name: "non-JSON body is not parsed",
			req: func() *authv3.CheckRequest {
				return httpCheck("POST", "/v1/chat/completions", map[string]string{"content-type": "text/plain"}, `{"a":1}`)
			},
			want: map[string]string{"parsed_body": `null`},
		},
		{
			name: "body without a content type is not parsed",
			req:  func() *authv3.CheckRequest { return httpCheck("POST", "/v1/chat/completions", nil, `{"a":1}`) },
			want: map[string]string{"parsed_body": `null`},
		},
		{
			name: "truncated body",
			req: func() *authv3.CheckRequest {
				return httpCheck("POST", "/v1/chat/completions", map[string]string{
					"content-type": "application/json", partialBodyHeader: "true",
				}, `{"messages":[{"role":"us`)
			},
			want: map[string]string{"truncated_body": `true`, "parsed_body": `null`},
		},
		{
			name:     "body parsing switched off: neither key, as upstream",
			skipBody: true,
			req: func() *authv3.CheckRequest {
				return httpCheck("POST", "/v1/chat/completions", jsonHeaders, `{"a":1}`)
			},
			want: map[string]string{"parsed_body": absent, "truncated_body": absent},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			input := buildTestInput(t, tc.req(), tc.skipBody)
			for key, want := range tc.want {
				got, ok := input[key]
				switch {
				case want == absent && ok:
					t.Errorf("input.%s = %s, want it absent", key, mustJSON(t, got))
				case want == absent:
				case !ok:
					t.Errorf("input.%s is absent, want %s", key, want)
				case mustJSON(t, got) != mustJSON(t, jsonValue(t, want)):
					t.Errorf("input.%s = %s, want %s", key, mustJSON(t, got), want)
				}
			}
		})
	}
}

// The attributes keep protojson's field names and encodings exactly:
// policies written for upstream read input.attributes.source.address.socketAddress.
func TestInputAttributesAreTheProtojsonEncoding(t *testing.T) {
	input := buildTestInput(t, richCheck(), false)
	want := `{
	  "contextExtensions": {"route": "tools"},
	  "destination": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": 10000}}},
	  "metadataContext": {"filterMetadata": {"envoy.lb": {
	    "float": 1.5, "huge": 1e+21, "int": 3, "tiny": 1e-7, "nested": {"list": ["a", true, null]}}}},
	  "request": {
	    "time": "2026-11-20T10:00:00.120Z",
	    "http": {
	      "id": "4137425712839461234",
	      "method": "POST",
	      "path": "/v1/tools/web-search:invoke?trace=1",
	      "host": "gateway.nexus.local",
	      "scheme": "http",
	      "protocol": "HTTP/1.1",
	      "size": "53",
	      "headers": {"authorization": "Bearer nx_live_key", "content-type": "application/json", "x-nexus-tenant": "acme"},
	      "headerMap": {"headers": [{"key": "x-raw", "rawValue": "cgF3"}, {"key": "x-plain", "value": "plain"}]},
	      "body": "{\"arguments\":{\"query\":\"opa\",\"limit\":10,\"ratio\":1.50}}",
	      "rawBody": "AP94"
	    }
	  },
	  "source": {
	    "address": {"socketAddress": {"address": "127.0.0.1", "portValue": 51234, "protocol": "UDP"}},
	    "labels": {"app": "gateway"},
	    "principal": "spiffe://nexus/gateway"
	  },
	  "tlsSession": {"sni": "gateway.nexus.local"}
	}`
	if got := mustJSON(t, input["attributes"]); got != mustJSON(t, jsonValue(t, want)) {
		t.Errorf("input.attributes =\n%s\nwant\n%s", got, mustJSON(t, jsonValue(t, want)))
	}
	if got := mustJSON(t, input["parsed_body"]); got != `{"arguments":{"limit":10,"query":"opa","ratio":1.50}}` {
		t.Errorf("input.parsed_body = %s", got)
	}
}

// parsed_path and parsed_query as upstream opa-envoy-plugin computes them
// (envoyauth/request.go, getParsedPathAndQuery).
func TestPathAndQueryAreParsedAsUpstreamParsesThem(t *testing.T) {
	cases := []struct {
		path, wantPath, wantQuery string
	}{
		{"/v1/chat/completions", `["v1","chat","completions"]`, `{}`},
		{"/v1/chat/completions/", `["v1","chat","completions",""]`, `{}`},
		{"/v1//chat/completions", `["v1","","chat","completions"]`, `{}`},
		{"//admin/dashboard", `["admin","dashboard"]`, `{}`},
		{"///v1/chats/c1", `["v1","chats","c1"]`, `{}`},
		{"/", `[""]`, `{}`},
		{"", `[""]`, `{}`},
		{"/v1/chats/%C3%A9t%C3%A9", `["v1","chats","été"]`, `{}`},
		{"/v1/chat%2Fcompletions", `["v1","chat","completions"]`, `{}`},
		{"%2Fv1%2Fchats%2Fc1", `["v1","chats","c1"]`, `{}`},
		{"/v1/a+b", `["v1","a+b"]`, `{}`},
		{"/v1/chats/c1?a=1&a=2&b=&c", `["v1","chats","c1"]`, `{"a":["1","2"],"b":[""],"c":[""]}`},
		{"/v1/chats/c1?q=a%20b+c&k%3D=%2F", `["v1","chats","c1"]`, `{"k=":["/"],"q":["a b c"]}`},
		{"/v1/chats/c1?", `["v1","chats","c1"]`, `{}`},
		{"/v1/chats/c1?a=1&&b=2", `["v1","chats","c1"]`, `{"a":["1"],"b":["2"]}`},
		{"/v1/chats/c1?x=a?b", `["v1","chats","c1"]`, `{"x":["a?b"]}`},
		{"/v1/chats/c1#frag", `["v1","chats","c1#frag"]`, `{}`},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			input := buildTestInput(t, httpCheck("GET", tc.path, nil, ""), false)
			if got := mustJSON(t, input["parsed_path"]); got != tc.wantPath {
				t.Errorf("parsed_path %s, want %s", got, tc.wantPath)
			}
			if got := mustJSON(t, input["parsed_query"]); got != tc.wantQuery {
				t.Errorf("parsed_query %s, want %s", got, tc.wantQuery)
			}
		})
	}
}

// The paths Envoy forwards once its listener has canonicalised them
// (normalize_path, merge_slashes, escaped slashes refused: see
// nexus_dataplane/envoy.py), split as the policy reads them: an empty
// segment stays, so "/v1/chats/" is not a read of chat "" but no route, and
// an escape Envoy leaves is decoded once, never twice.
func TestEnvoysCanonicalPathsKeepTheirSegments(t *testing.T) {
	cases := []struct{ path, want string }{
		{"/v1/chats/", `["v1","chats",""]`},
		{"/v1/", `["v1",""]`},
		{"/v1/chats/c1/", `["v1","chats","c1",""]`},
		{"/v1/chats/...", `["v1","chats","..."]`},
		{"/v1/chats/a%25b", `["v1","chats","a%b"]`},
		{"/v1/chats/a%252e%252e", `["v1","chats","a%2e%2e"]`},
		{"/v1/chats/a%7Bb%7D%7Cc", `["v1","chats","a{b}|c"]`},
		{"/v1/chats/c%20d", `["v1","chats","c d"]`},
		{"/v1/chats/c1;x=1", `["v1","chats","c1;x=1"]`},
		{"/v1/tools/web-search%3Ainvoke", `["v1","tools","web-search:invoke"]`},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			input := buildTestInput(t, httpCheck("GET", tc.path, nil, ""), false)
			if got := mustJSON(t, input["parsed_path"]); got != tc.want {
				t.Errorf("parsed_path %s, want %s", got, tc.want)
			}
		})
	}
}

// A path or query that cannot be decoded is refused with a 400, as
// upstream refuses it, rather than decided on a guess.
func TestAMalformedPathOrQueryIsRefused(t *testing.T) {
	for _, path := range []string{"/v1/chats/%zz", "/v1/chats/%", "/v1/chats/c1?a=%zz", "/v1/chats/c1?a=1;b=2"} {
		t.Run(path, func(t *testing.T) {
			input, err := buildInput(httpCheck("GET", path, nil, ""), defaultInputOptions)
			r, ok := errors.AsType[*refusal](err)
			if !ok {
				t.Fatalf("error %v, want a refusal", err)
			}
			if r.status != 400 || r.code != CodeRequestParse || r.rule != ruleTargetInvalid {
				t.Errorf("refusal %+v", r)
			}
			if input == nil || input.Get(ast.StringTerm("attributes")) == nil {
				t.Error("the attributes are not kept for the decision log")
			}
		})
	}
}

func TestTheSourcePrincipalIsLiftedAsUpstreamDoes(t *testing.T) {
	req := httpCheck("GET", "/", nil, "")
	if _, ok := buildTestInput(t, req, false)["source_principal"]; ok {
		t.Error("source_principal present without a principal")
	}
	req.Attributes.Source.Principal = "spiffe://nexus/ns/gw/sa/gateway"
	if got := buildTestInput(t, req, false)["source_principal"]; got != "spiffe://nexus/ns/gw/sa/gateway" {
		t.Errorf("source_principal %v", got)
	}
}
