package extauthz

import (
	"encoding/json"
	"fmt"
	"sort"

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

const defaultDeniedStatus = 403

// buildResponse maps the policy's decision to Envoy's CheckResponse.
func buildResponse(result any, decisionID string, dryRun bool) (*authv3.CheckResponse, error) {
	d, err := parseDecision(result)
	if err != nil {
		return nil, err
	}
	metadata := d.metadata
	if metadata == nil {
		metadata = map[string]any{}
	}
	metadata[decisionIDKey] = decisionID
	md, err := structpb.NewStruct(metadata)
	if err != nil {
		return nil, fmt.Errorf("decision.dynamic_metadata: %w", err)
	}

	if d.allowed || dryRun {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:              d.headers,
				HeadersToRemove:      d.headersToRemove,
				ResponseHeadersToAdd: d.responseHeaders,
			}},
			DynamicMetadata: md,
		}, nil
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.httpStatus)}, // #nosec G115 -- httpStatus() keeps it within 100..599
			Headers: append(d.headers, d.responseHeaders...),
			Body:    d.body,
		}},
		DynamicMetadata: md,
	}, nil
}

type decision struct {
	allowed         bool
	httpStatus      int
	body            string
	headers         []*corev3.HeaderValueOption
	responseHeaders []*corev3.HeaderValueOption
	headersToRemove []string
	metadata        map[string]any
}

func parseDecision(result any) (*decision, error) {
	d := &decision{httpStatus: defaultDeniedStatus}
	switch v := result.(type) {
	case bool:
		d.allowed = v
		return d, nil
	case map[string]any:
		return d, d.fill(v)
	default:
		return nil, fmt.Errorf("decision must be a boolean or an object, got %T", result)
	}
}

func (d *decision) fill(obj map[string]any) error {
	allowed, ok := obj["allowed"].(bool)
	if !ok {
		return fmt.Errorf("decision.allowed must be a boolean")
	}
	d.allowed = allowed
	var err error
	if raw, ok := obj["http_status"]; ok {
		if d.httpStatus, err = httpStatus(raw); err != nil {
			return err
		}
	}
	if raw, ok := obj["body"]; ok {
		if d.body, ok = raw.(string); !ok {
			return fmt.Errorf("decision.body must be a string")
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
	if raw, ok := obj["dynamic_metadata"]; ok {
		m, ok := raw.(map[string]any)
		if !ok {
			return fmt.Errorf("decision.dynamic_metadata must be an object")
		}
		d.metadata = plainJSON(m).(map[string]any)
	}
	return nil
}

func httpStatus(raw any) (int, error) {
	n, ok := raw.(json.Number)
	if !ok {
		return 0, fmt.Errorf("decision.http_status must be a number")
	}
	code, err := n.Int64()
	if err != nil || code < 100 || code > 599 {
		return 0, fmt.Errorf("decision.http_status must be an HTTP status code, got %s", n)
	}
	return int(code), nil
}

// headerOptions accepts {name: value} or {name: [values]}; a list adds the
// header once per value. Names are sorted so the response is deterministic.
func headerOptions(field string, raw any) ([]*corev3.HeaderValueOption, error) {
	if raw == nil {
		return nil, nil
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("decision.%s must be an object", field)
	}
	names := make([]string, 0, len(obj))
	for name := range obj {
		names = append(names, name)
	}
	sort.Strings(names)

	var out []*corev3.HeaderValueOption
	for _, name := range names {
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
			return nil, fmt.Errorf("decision.%s.%s must be a string or a list of strings", field, name)
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

func stringList(field string, raw any) ([]string, error) {
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("decision.%s must be a list of strings", field)
	}
	out := make([]string, len(list))
	for i, item := range list {
		s, ok := item.(string)
		if !ok {
			return nil, fmt.Errorf("decision.%s[%d] must be a string", field, i)
		}
		out[i] = s
	}
	return out, nil
}

// plainJSON converts OPA's json.Number values to float64, the only number
// type structpb accepts.
func plainJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, _ := x.Float64()
		return f
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, item := range x {
			out[k] = plainJSON(item)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, item := range x {
			out[i] = plainJSON(item)
		}
		return out
	default:
		return v
	}
}
