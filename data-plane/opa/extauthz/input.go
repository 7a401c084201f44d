package extauthz

import (
	"encoding/json"
	"mime"
	"net/url"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/open-policy-agent/opa/v1/util"
)

// partialBodyHeader is set by Envoy when it forwarded only the first
// max_request_bytes of the body (allow_partial_message: true).
const partialBodyHeader = "x-envoy-auth-partial-body"

// buildInput turns a CheckRequest into the policy's input document.
func buildInput(req *authv3.CheckRequest, skipBodyParse bool) (map[string]any, error) {
	raw, err := protojson.Marshal(req)
	if err != nil {
		return nil, newCheckError(codes.InvalidArgument, CodeRequestParse, "the check request cannot be encoded as JSON", err)
	}
	var input map[string]any
	if err := util.UnmarshalJSON(raw, &input); err != nil {
		return nil, newCheckError(codes.InvalidArgument, CodeRequestParse, "the check request cannot be decoded", err)
	}

	httpReq := req.GetAttributes().GetRequest().GetHttp()
	path, query, err := splitPath(httpReq.GetPath())
	if err != nil {
		return nil, err
	}
	input["parsed_path"] = path
	input["parsed_query"] = query
	input["truncated_body"] = httpReq.GetHeaders()[partialBodyHeader] == "true"
	input["version"] = map[string]any{"encoding": "protojson", "ext_authz": "v3"}

	if !skipBodyParse {
		if body, ok := parseJSONBody(httpReq.GetHeaders()["content-type"], httpReq.GetBody(), httpReq.GetRawBody()); ok {
			input["parsed_body"] = body
		}
	}
	return input, nil
}

// splitPath returns the path's non-empty segments and its query parameters.
func splitPath(full string) ([]any, map[string]any, error) {
	u, err := url.ParseRequestURI(full)
	if err != nil {
		return nil, nil, newCheckError(codes.InvalidArgument, CodeRequestParse, "the request path is not a valid request target", err)
	}
	segments := []any{}
	for _, s := range strings.Split(u.Path, "/") {
		if s != "" {
			segments = append(segments, s)
		}
	}
	query := map[string]any{}
	for key, values := range u.Query() {
		vs := make([]any, len(values))
		for i, v := range values {
			vs[i] = v
		}
		query[key] = vs
	}
	return segments, query, nil
}

// parseJSONBody decodes a JSON body. A body that is not JSON, or not valid
// JSON, leaves parsed_body undefined so that rules depending on it do not
// match (a policy refuses rather than guesses).
func parseJSONBody(contentType, body string, rawBody []byte) (any, bool) {
	if contentType == "" {
		return nil, false
	}
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil || (mediaType != "application/json" && !strings.HasSuffix(mediaType, "+json")) {
		return nil, false
	}
	// Envoy sends the body as a string, or as bytes with pack_as_bytes;
	// like upstream, the string wins when both are there.
	data := []byte(body)
	if len(data) == 0 {
		data = rawBody
	}
	if len(data) == 0 || !json.Valid(data) {
		return nil, false
	}
	var parsed any
	if err := util.UnmarshalJSON(data, &parsed); err != nil {
		return nil, false
	}
	return parsed, true
}
