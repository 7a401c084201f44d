package extauthz

import (
	"encoding/json"
	"sort"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
)

// decisionIDKey names the decision id in Envoy's dynamic metadata
// (namespace envoy.filters.http.ext_authz).
const decisionIDKey = "decision_id"

// defaultDeniedStatus answers a refusal that names no http_status, as
// upstream does.
const defaultDeniedStatus = 403

// buildResponse maps the policy's decision to Envoy's CheckResponse. In
// dry-run mode every request is let through as it is (no headers added or
// removed), while the decision log still records what was decided.
func buildResponse(result any, decisionID string, dryRun bool) (*authv3.CheckResponse, error) {
	d, err := parseDecision(result)
	if err != nil {
		return nil, err
	}
	md, err := dynamicMetadata(d.metadata, decisionID)
	if err != nil {
		return nil, err
	}
	switch {
	case d.allowed:
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:                 d.headers,
				HeadersToRemove:         d.headersToRemove,
				ResponseHeadersToAdd:    d.responseHeaders,
				QueryParametersToRemove: d.queryToRemove,
				QueryParametersToSet:    d.queryToSet,
			}},
			DynamicMetadata: md,
		}, nil
	case dryRun:
		return &authv3.CheckResponse{
			Status:          &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
			DynamicMetadata: md,
		}, nil
	default:
		return deniedResponse(d.httpStatus, append(d.headers, d.responseHeaders...), d.body, md), nil
	}
}

// deniedResponse is Envoy's answer to the client when a request is refused.
// On a refusal `headers` go to the client (there is no upstream request),
// together with `response_headers_to_add`.
func deniedResponse(status int, headers []*corev3.HeaderValueOption, body string, md *structpb.Struct) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)}, // #nosec G115 -- statuses are checked to be 100..599
			Headers: headers,
			Body:    body,
		}},
		DynamicMetadata: md,
	}
}

// dynamicMetadata is the decision's dynamic_metadata with the decision id
// added; the id always wins over a policy-provided decision_id.
func dynamicMetadata(fields map[string]any, decisionID string) (*structpb.Struct, error) {
	md := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(fields)+1)}
	for k, v := range fields {
		value, err := structpb.NewValue(v)
		if err != nil {
			return nil, resultError("decision.dynamic_metadata." + k + " cannot be Envoy metadata (invalid UTF-8 or an unsupported value)")
		}
		md.Fields[k] = value
	}
	md.Fields[decisionIDKey] = structpb.NewStringValue(decisionID)
	return md, nil
}

type decision struct {
	allowed         bool
	httpStatus      int
	body            string
	headers         []*corev3.HeaderValueOption
	responseHeaders []*corev3.HeaderValueOption
	headersToRemove []string
	queryToRemove   []string
	queryToSet      []*corev3.QueryParameter
	metadata        map[string]any
}

func parseDecision(result any) (*decision, error) {
	d := &decision{httpStatus: defaultDeniedStatus}
	switch v := result.(type) {
	case bool:
		d.allowed = v
		return d, nil
	case map[string]any:
		if err := d.fill(v); err != nil {
			return nil, err
		}
		return d, nil
	default:
		return nil, resultError("the decision must be a boolean or an object, not " + jsonType(result))
	}
}

func (d *decision) fill(obj map[string]any) error {
	allowed, ok := obj["allowed"].(bool)
	if !ok {
		if _, present := obj["allowed"]; !present {
			return resultError("decision.allowed is missing")
		}
		return resultError("decision.allowed must be a boolean, not " + jsonType(obj["allowed"]))
	}
	d.allowed = allowed
	var err error
	if raw, ok := obj["http_status"]; ok {
		if d.httpStatus, err = httpStatus(raw); err != nil {
			return err
		}
	}
	if raw, ok := obj["body"]; ok {
		if d.body, err = responseBody(raw); err != nil {
			return err
		}
	}
	if d.headers, err = headerOptions("headers", obj["headers"]); err != nil {
		return err
	}
	if d.responseHeaders, err = headerOptions("response_headers_to_add", obj["response_headers_to_add"]); err != nil {
		return err
	}
	if raw, ok := obj["request_headers_to_remove"]; ok {
		if d.headersToRemove, err = stringList("request_headers_to_remove", raw); err != nil {
			return err
		}
	}
	if raw, ok := obj["query_parameters_to_remove"]; ok {
		if d.queryToRemove, err = stringList("query_parameters_to_remove", raw); err != nil {
			return err
		}
	}
	if raw, ok := obj["query_parameters_to_set"]; ok {
		if d.queryToSet, err = queryParameters(raw); err != nil {
			return err
		}
	}
	if raw, ok := obj["dynamic_metadata"]; ok {
		m, ok := raw.(map[string]any)
		if !ok {
			return resultError("decision.dynamic_metadata must be an object, not " + jsonType(raw))
		}
		d.metadata = m
	}
	return nil
}

// httpStatus accepts the codes Envoy's HttpStatus enum defines, as
// upstream does; Envoy refuses any other value.
func httpStatus(raw any) (int, error) {
	n, ok := raw.(json.Number)
	if !ok {
		return 0, resultError("decision.http_status must be a number, not " + jsonType(raw))
	}
	code, err := strconv.ParseInt(string(n), 10, 32)
	if _, known := typev3.StatusCode_name[int32(code)]; err != nil || !known || code == 0 {
		return 0, resultError("decision.http_status must be an HTTP status code Envoy knows, not " + string(n))
	}
	return int(code), nil
}

// responseBody is the body of a refusal: a string as it is, an object or
// a list as compact JSON with sorted keys (the encoding OPA's json.marshal
// uses).
func responseBody(raw any) (string, error) {
	switch v := raw.(type) {
	case string:
		return v, nil
	case map[string]any, []any:
		out, err := json.Marshal(v)
		if err != nil {
			return "", resultError("decision.body cannot be encoded as JSON")
		}
		return string(out), nil
	default:
		return "", resultError("decision.body must be a string or an object, not " + jsonType(raw))
	}
}

// headerOptions accepts {name: value}, {name: [values]} or a list of such
// objects (upstream's shapes); a list of values adds the header once per
// value. Names are sorted within an object so the answer is deterministic.
func headerOptions(field string, raw any) ([]*corev3.HeaderValueOption, error) {
	switch v := raw.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return appendHeaderOptions(nil, field, v)
	case []any:
		var out []*corev3.HeaderValueOption
		for i, item := range v {
			obj, ok := item.(map[string]any)
			if !ok {
				return nil, resultError("decision." + field + "[" + strconv.Itoa(i) + "] must be an object, not " + jsonType(item))
			}
			var err error
			if out, err = appendHeaderOptions(out, field, obj); err != nil {
				return nil, err
			}
		}
		return out, nil
	default:
		return nil, resultError("decision." + field + " must be an object, not " + jsonType(raw))
	}
}

func appendHeaderOptions(out []*corev3.HeaderValueOption, field string, obj map[string]any) ([]*corev3.HeaderValueOption, error) {
	for _, name := range sortedKeys(obj) {
		if name == "" {
			return nil, resultError("decision." + field + " has a header without a name")
		}
		switch v := obj[name].(type) {
		case string:
			out = append(out, headerOption(name, v, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD))
		case []any:
			values, err := stringList(field+"."+name, v)
			if err != nil {
				return nil, err
			}
			for i, value := range values {
				action := corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
				if i == 0 {
					action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
				}
				out = append(out, headerOption(name, value, action))
			}
		default:
			return nil, resultError("decision." + field + "." + name + " must be a string or a list of strings, not " + jsonType(v))
		}
	}
	return out, nil
}

func headerOption(name, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, Value: value},
		AppendAction: action,
	}
}

func queryParameters(raw any) ([]*corev3.QueryParameter, error) {
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, resultError("decision.query_parameters_to_set must be an object, not " + jsonType(raw))
	}
	var out []*corev3.QueryParameter
	for _, name := range sortedKeys(obj) {
		switch v := obj[name].(type) {
		case string:
			out = append(out, &corev3.QueryParameter{Key: name, Value: v})
		case []any:
			values, err := stringList("query_parameters_to_set."+name, v)
			if err != nil {
				return nil, err
			}
			for _, value := range values {
				out = append(out, &corev3.QueryParameter{Key: name, Value: value})
			}
		default:
			return nil, resultError("decision.query_parameters_to_set." + name + " must be a string or a list of strings, not " + jsonType(v))
		}
	}
	return out, nil
}

func stringList(field string, raw any) ([]string, error) {
	list, ok := raw.([]any)
	if !ok {
		return nil, resultError("decision." + field + " must be a list of strings, not " + jsonType(raw))
	}
	out := make([]string, len(list))
	for i, item := range list {
		s, ok := item.(string)
		if !ok {
			return nil, resultError("decision." + field + "[" + strconv.Itoa(i) + "] must be a string, not " + jsonType(item))
		}
		out[i] = s
	}
	return out, nil
}

func sortedKeys(obj map[string]any) []string {
	names := make([]string, 0, len(obj))
	for name := range obj {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// jsonType names a decoded JSON value's type the way a policy author
// knows it.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64, int:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	default:
		return "an unsupported value"
	}
}
