package extauthz

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

const testDecisionID = "6f1c1a57-9a1e-4d34-a5f9-3a1a8f0c0b11"

func overwrite(name, value string) *corev3.HeaderValueOption {
	return headerOption(name, value, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
}

func appended(name, value string) *corev3.HeaderValueOption {
	return headerOption(name, value, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)
}

func metadata(t testing.TB, fields map[string]any) *structpb.Struct {
	t.Helper()
	fields[decisionIDKey] = testDecisionID
	md, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	return md
}

func allowedResponse(t testing.TB, ok *authv3.OkHttpResponse, md map[string]any) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: metadata(t, md),
	}
}

func refusedResponse(t testing.TB, status typev3.StatusCode, headers []*corev3.HeaderValueOption, body string, md map[string]any) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: status},
			Headers: headers,
			Body:    body,
		}},
		DynamicMetadata: metadata(t, md),
	}
}

func TestEveryDecisionShapeBecomesEnvoysAnswer(t *testing.T) {
	cases := []struct {
		name     string
		decision string
		dryRun   bool
		want     func(t testing.TB) *authv3.CheckResponse
	}{
		{
			name:     "boolean allow",
			decision: `true`,
			want: func(t testing.TB) *authv3.CheckResponse {
				return allowedResponse(t, &authv3.OkHttpResponse{}, map[string]any{})
			},
		},
		{
			name:     "boolean deny is a 403",
			decision: `false`,
			want: func(t testing.TB) *authv3.CheckResponse {
				return refusedResponse(t, typev3.StatusCode_Forbidden, nil, "", map[string]any{})
			},
		},
		{
			name:     "object allow with nothing else",
			decision: `{"allowed": true}`,
			want: func(t testing.TB) *authv3.CheckResponse {
				return allowedResponse(t, &authv3.OkHttpResponse{}, map[string]any{})
			},
		},
		{
			name: "allow with upstream headers, client headers and headers to remove",
			decision: `{
				"allowed": true,
				"http_status": 200,
				"headers": {"x-nexus-route-model": "gpt-4.1", "x-multi": ["a", "b"]},
				"response_headers_to_add": {"x-nexus-budget-warning": "tenant=85%"},
				"request_headers_to_remove": ["authorization", "x-nexus-approval"],
				"body": "",
				"reasons": []
			}`,
			want: func(t testing.TB) *authv3.CheckResponse {
				return allowedResponse(t, &authv3.OkHttpResponse{
					Headers: []*corev3.HeaderValueOption{
						// A list: the first value replaces the request's, the rest are appended.
						overwrite("x-multi", "a"), appended("x-multi", "b"),
						overwrite("x-nexus-route-model", "gpt-4.1"),
					},
					ResponseHeadersToAdd: []*corev3.HeaderValueOption{overwrite("x-nexus-budget-warning", "tenant=85%")},
					HeadersToRemove:      []string{"authorization", "x-nexus-approval"},
				}, map[string]any{})
			},
		},
		{
			name:     "headers as a list of objects, as upstream accepts",
			decision: `{"allowed": true, "headers": [{"x-a": "1"}, {"x-b": "2", "x-a": "3"}]}`,
			want: func(t testing.TB) *authv3.CheckResponse {
				return allowedResponse(t, &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
					overwrite("x-a", "1"), overwrite("x-a", "3"), overwrite("x-b", "2"),
				}}, map[string]any{})
			},
		},
		{
			name:     "query parameters to remove and to set",
			decision: `{"allowed": true, "query_parameters_to_remove": ["token"], "query_parameters_to_set": {"v": "2", "m": ["a", "b"]}}`,
			want: func(t testing.TB) *authv3.CheckResponse {
				return allowedResponse(t, &authv3.OkHttpResponse{
					QueryParametersToRemove: []string{"token"},
					QueryParametersToSet: []*corev3.QueryParameter{
						{Key: "m", Value: "a"}, {Key: "m", Value: "b"}, {Key: "v", Value: "2"},
					},
				}, map[string]any{})
			},
		},
		{
			name: "refusal with status, headers and a string body",
			decision: `{
				"allowed": false,
				"http_status": 429,
				"headers": {"content-type": "application/json"},
				"response_headers_to_add": {"retry-after": "30"},
				"body": "{\"error\":\"denied\"}"
			}`,
			want: func(t testing.TB) *authv3.CheckResponse {
				return refusedResponse(t, typev3.StatusCode_TooManyRequests, []*corev3.HeaderValueOption{
					overwrite("content-type", "application/json"), overwrite("retry-after", "30"),
				}, `{"error":"denied"}`, map[string]any{})
			},
		},
		{
			name:     "refusal with an object body: compact JSON, sorted keys, numbers as written",
			decision: `{"allowed": false, "http_status": 400, "body": {"reasons": [{"rule": "r", "n": 1.0}], "error": "denied"}}`,
			want: func(t testing.TB) *authv3.CheckResponse {
				return refusedResponse(t, typev3.StatusCode_BadRequest, nil,
					`{"error":"denied","reasons":[{"n":1.0,"rule":"r"}]}`, map[string]any{})
			},
		},
		{
			name:     "refusal without http_status is a 403",
			decision: `{"allowed": false, "body": "no"}`,
			want: func(t testing.TB) *authv3.CheckResponse {
				return refusedResponse(t, typev3.StatusCode_Forbidden, nil, "no", map[string]any{})
			},
		},
		{
			name:     "dynamic metadata passed on, the decision id added and winning",
			decision: `{"allowed": true, "dynamic_metadata": {"tenant": "acme", "ratio": 0.5, "decision_id": "forged", "tags": ["a"]}}`,
			want: func(t testing.TB) *authv3.CheckResponse {
				return allowedResponse(t, &authv3.OkHttpResponse{}, map[string]any{
					"tenant": "acme", "ratio": 0.5, "tags": []any{"a"},
				})
			},
		},
		{
			name:     "dry run lets a refusal through, without the refusal's headers",
			decision: `{"allowed": false, "http_status": 403, "headers": {"content-type": "application/json"}, "body": "x"}`,
			dryRun:   true,
			want: func(t testing.TB) *authv3.CheckResponse {
				return allowedResponse(t, &authv3.OkHttpResponse{}, map[string]any{})
			},
		},
		{
			name:     "dry run keeps an allow's headers",
			decision: `{"allowed": true, "headers": {"x-a": "1"}}`,
			dryRun:   true,
			want: func(t testing.TB) *authv3.CheckResponse {
				return allowedResponse(t, &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{overwrite("x-a", "1")}}, map[string]any{})
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := buildResponse(jsonValue(t, tc.decision), testDecisionID, tc.dryRun)
			if err != nil {
				t.Fatalf("buildResponse: %v", err)
			}
			if want := tc.want(t); !proto.Equal(got, want) {
				t.Errorf("response\n%s\nwant\n%s", protojson.Format(got), protojson.Format(want))
			}
		})
	}
}

func TestAMalformedDecisionIsANamedError(t *testing.T) {
	cases := []struct {
		name     string
		decision string
		message  string
	}{
		{"a string", `"yes"`, "the decision must be a boolean or an object, not a string"},
		{"null", `null`, "the decision must be a boolean or an object, not null"},
		{"a list", `[true]`, "the decision must be a boolean or an object, not a list"},
		{"allowed missing", `{"http_status": 200}`, "decision.allowed is missing"},
		{"allowed a string", `{"allowed": "true"}`, "decision.allowed must be a boolean, not a string"},
		{"http_status a string", `{"allowed": false, "http_status": "403"}`, "decision.http_status must be a number, not a string"},
		{"http_status not a code", `{"allowed": false, "http_status": 299}`, "decision.http_status must be an HTTP status code Envoy knows, not 299"},
		{"http_status a fraction", `{"allowed": false, "http_status": 403.5}`, "decision.http_status must be an HTTP status code Envoy knows, not 403.5"},
		{"http_status zero", `{"allowed": false, "http_status": 0}`, "decision.http_status must be an HTTP status code Envoy knows, not 0"},
		{"body a number", `{"allowed": false, "body": 5}`, "decision.body must be a string or an object, not a number"},
		{"headers a list of strings", `{"allowed": true, "headers": ["x-a"]}`, "decision.headers[0] must be an object, not a string"},
		{"headers a string", `{"allowed": true, "headers": "x-a: 1"}`, "decision.headers must be an object, not a string"},
		{"header value a number", `{"allowed": true, "headers": {"x-a": 1}}`, "decision.headers.x-a must be a string or a list of strings, not a number"},
		{"header value list of numbers", `{"allowed": true, "headers": {"x-a": [1]}}`, "decision.headers.x-a[0] must be a string, not a number"},
		{"header without a name", `{"allowed": true, "headers": {"": "v"}}`, "decision.headers has a header without a name"},
		{"response headers a list of strings", `{"allowed": true, "response_headers_to_add": [1]}`, "decision.response_headers_to_add[0] must be an object, not a number"},
		{"headers to remove an object", `{"allowed": true, "request_headers_to_remove": {"a": 1}}`, "decision.request_headers_to_remove must be a list of strings, not an object"},
		{"headers to remove with a number", `{"allowed": true, "request_headers_to_remove": ["a", 2]}`, "decision.request_headers_to_remove[1] must be a string, not a number"},
		{"query to set a list", `{"allowed": true, "query_parameters_to_set": ["a"]}`, "decision.query_parameters_to_set must be an object, not a list"},
		{"dynamic metadata a list", `{"allowed": true, "dynamic_metadata": [1]}`, "decision.dynamic_metadata must be an object, not a list"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := buildResponse(jsonValue(t, tc.decision), testDecisionID, false)
			if resp != nil {
				t.Fatalf("a malformed decision gave an answer: %s", protojson.Format(resp))
			}
			ce := assertCheckError(t, err, CodeResult)
			if ce.Message != tc.message {
				t.Errorf("message %q, want %q", ce.Message, tc.message)
			}
			if ce.status != codes.Internal {
				t.Errorf("gRPC code %v, want Internal", ce.status)
			}
		})
	}
}
