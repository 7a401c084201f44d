package extauthz

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-policy-agent/opa/v1/ast"
)

// httpCheck is a CheckRequest as Envoy sends it for one HTTP request:
// lower-case header names, the body as a string, peers as socket addresses.
func httpCheck(method, path string, headers map[string]string, body string) *authv3.CheckRequest {
	if headers == nil {
		headers = map[string]string{}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{
			Address: socketAddress("127.0.0.1", 51234),
		},
		Destination: &authv3.AttributeContext_Peer{
			Address: socketAddress("127.0.0.1", 10000),
		},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Date(2026, 11, 20, 10, 0, 0, 120_000_000, time.UTC)),
			Http: &authv3.AttributeContext_HttpRequest{
				Id:       "4137425712839461234",
				Method:   method,
				Path:     path,
				Host:     "gateway.nexus.local",
				Scheme:   "http",
				Protocol: "HTTP/1.1",
				Headers:  headers,
				Body:     body,
				Size:     int64(len(body)),
			},
		},
	}}
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// richCheck exercises every kind of field protojson encodes differently:
// 64-bit integers (strings), bytes (base64), enums (names), maps, lists,
// nested messages, timestamps and structs.
func richCheck() *authv3.CheckRequest {
	req := httpCheck("POST", "/v1/tools/web-search:invoke?trace=1", map[string]string{
		"content-type":   "application/json",
		"authorization":  "Bearer nx_live_key",
		"x-nexus-tenant": "acme",
	}, `{"arguments":{"query":"opa","limit":10,"ratio":1.50}}`)
	attrs := req.Attributes
	attrs.Source.Principal = "spiffe://nexus/gateway"
	attrs.Source.Labels = map[string]string{"app": "gateway"}
	attrs.Source.Address.GetSocketAddress().Protocol = corev3.SocketAddress_UDP
	attrs.ContextExtensions = map[string]string{"route": "tools"}
	attrs.Request.Http.RawBody = []byte{0x00, 0xff, 'x'}
	attrs.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "x-raw", RawValue: []byte("r\x01w")},
		{Key: "x-plain", Value: "plain"},
	}}
	md, err := structpb.NewStruct(map[string]any{
		"float": 1.5, "int": 3.0, "tiny": 1e-7, "huge": 1e21, "nested": map[string]any{"list": []any{"a", true, nil}},
	})
	if err != nil {
		panic(err)
	}
	attrs.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.lb": md}}
	attrs.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "gateway.nexus.local"}
	return req
}

// jsonValue decodes JSON the way OPA's input is compared here: numbers as
// json.Number, so "1.50" and "1.5" stay apart.
func jsonValue(t testing.TB, text string) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(text)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("test JSON %q: %v", text, err)
	}
	return v
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return string(out)
}

// defaultInputOptions are those of the default configuration.
var defaultInputOptions = inputOptions{maxBodyDepth: defaultMaxBodyDepth}

// buildTestInput is the input document the plugin gives the policy, as
// plain JSON values.
func buildTestInput(t testing.TB, req *authv3.CheckRequest, skipBody bool) map[string]any {
	t.Helper()
	input, err := buildInput(req, inputOptions{skipBodyParse: skipBody, maxBodyDepth: defaultMaxBodyDepth})
	if err != nil {
		t.Fatalf("buildInput: %v", err)
	}
	plain, err := ast.JSON(input)
	if err != nil {
		t.Fatalf("input as JSON: %v", err)
	}
	return plain.(map[string]any)
}

// assertCheckError checks that err is one of the named errors, and that
// the gRPC status Envoy sees carries the code and no Go-internal text.
func assertCheckError(t testing.TB, err error, code string) *checkError {
	t.Helper()
	ce, ok := errors.AsType[*checkError](err)
	if !ok {
		t.Fatalf("error %v (%T) is not a named check error", err, err)
	}
	if ce.Code != code {
		t.Fatalf("error code %q, want %q (%v)", ce.Code, code, err)
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v carries no gRPC status", err)
	}
	if !strings.HasPrefix(st.Message(), code+": ") {
		t.Errorf("gRPC message %q does not start with the code %q", st.Message(), code)
	}
	for _, internal := range []string{"map[", "json.Number", "%!", "[]interface", "*ast.", "<nil>"} {
		if strings.Contains(st.Message(), internal) {
			t.Errorf("gRPC message %q leaks Go internals (%q)", st.Message(), internal)
		}
	}
	return ce
}
