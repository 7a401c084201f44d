package extauthz

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"net/url"
	"strings"
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-json-experiment/json/jsontext"
	"google.golang.org/grpc/codes"

	"github.com/open-policy-agent/opa/v1/ast"
)

// partialBodyHeader is set by Envoy when it forwarded only the first
// max_request_bytes of the body (allow_partial_message: true).
const partialBodyHeader = "x-envoy-auth-partial-body"

// Top-level keys of the input document.
var (
	keyParsedPath      = ast.StringTerm("parsed_path")
	keyParsedQuery     = ast.StringTerm("parsed_query")
	keyParsedBody      = ast.StringTerm("parsed_body")
	keyTruncatedBody   = ast.StringTerm("truncated_body")
	keyVersion         = ast.StringTerm("version")
	keySourcePrincipal = ast.StringTerm("source_principal")
	keyNexus           = ast.StringTerm("nexus")
	keyCredentialHash  = ast.StringTerm("credential_sha256")
	versionTerm        = ast.ObjectTerm(
		[2]*ast.Term{ast.StringTerm("encoding"), ast.StringTerm("protojson")},
		[2]*ast.Term{ast.StringTerm("ext_authz"), ast.StringTerm("v3")},
	)
)

// buildInput turns a CheckRequest into the policy's input document, built
// as OPA's value directly from the proto (protovalue.go); the decision log
// gets its plain form from this value, not from a second encoding.
func buildInput(req *authv3.CheckRequest, skipBodyParse bool) (ast.Object, error) {
	attrs, err := protoValue(req.ProtoReflect())
	if err != nil {
		return nil, newCheckError(codes.InvalidArgument, CodeRequestParse, "the check request cannot be encoded as protojson does", err)
	}
	input := attrs.(ast.Object)
	input.Insert(keyVersion, versionTerm)
	// Upstream lifts the source's principal (the client certificate's
	// URI SAN or subject) out of attributes, for policies to find it.
	if principal := req.GetAttributes().GetSource().GetPrincipal(); principal != "" {
		input.Insert(keySourcePrincipal, ast.StringTerm(principal))
	}

	httpReq := req.GetAttributes().GetRequest().GetHttp()
	input.Insert(keyNexus, ast.NewTerm(nexusFacts(httpReq.GetHeaders())))

	path, query, err := splitPath(httpReq.GetPath())
	if err != nil {
		// What could be built is returned, for the decision log.
		return input, err
	}
	input.Insert(keyParsedPath, ast.NewTerm(path))
	input.Insert(keyParsedQuery, ast.NewTerm(query))
	input.Insert(keyTruncatedBody, ast.InternedTerm(httpReq.GetHeaders()[partialBodyHeader] == "true"))

	if !skipBodyParse {
		if body, ok := parseJSONBody(httpReq.GetHeaders()["content-type"], httpReq.GetBody(), httpReq.GetRawBody()); ok {
			input.Insert(keyParsedBody, ast.NewTerm(body))
		}
	}
	return input, nil
}

// nexusFacts is input.nexus: what the plugin computes from the request so
// that the policy, the decision log's masking and a replay never need a
// secret the request carries.
//
//	credential_sha256  SHA-256 (lower-case hex) of the bearer credential in
//	                   "authorization: Bearer <credential>", the key under
//	                   which bundles list API keys; absent without one
func nexusFacts(headers map[string]string) ast.Object {
	facts := ast.NewObject()
	if credential, ok := bearerCredential(headers["authorization"]); ok {
		sum := sha256.Sum256([]byte(credential))
		facts.Insert(keyCredentialHash, ast.StringTerm(hex.EncodeToString(sum[:])))
	}
	return facts
}

// bearerCredential reads the credential as the policy's identity rules
// read it (rego/nexus/identity.rego): the scheme "bearer " in any case,
// then the rest with surrounding white space trimmed, and not empty.
func bearerCredential(authorization string) (string, bool) {
	const scheme = "bearer "
	if len(authorization) < len(scheme) || !strings.EqualFold(authorization[:len(scheme)], scheme) {
		return "", false
	}
	credential := strings.TrimSpace(authorization[len(scheme):])
	return credential, credential != ""
}

// splitPath returns parsed_path and parsed_query as upstream computes them:
// the path is everything before the first "?", percent-decoded, with its
// leading slashes dropped and split on "/", so every other empty segment
// stays ("/v1/chat/completions/" ends in "", "/v1//chat" has one inside,
// "/" is [""]) and a policy matching ["v1", "chat", "completions"] matches
// only that route; "//admin" is ["admin"], not a host. The query is
// decoded by url.ParseQuery: every value of a repeated key in order, a key
// without "=" has the value "". A malformed escape in either, or a ";" in
// the query, refuses the request (400), as upstream does.
func splitPath(full string) (*ast.Array, ast.Object, error) {
	rawPath, rawQuery, _ := strings.Cut(full, "?")
	path, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, nil, badRequest(CodeRequestParse, ruleTargetInvalid, "the request path has a malformed percent-escape", err)
	}
	parts := strings.Split(strings.TrimLeft(path, "/"), "/")
	segments := make([]*ast.Term, len(parts))
	for i, s := range parts {
		segments[i] = ast.StringTerm(s)
	}
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, nil, badRequest(CodeRequestParse, ruleTargetInvalid, "the query string has a malformed percent-escape or a \";\"", err)
	}
	query := ast.NewObjectWithCapacity(len(values))
	for key, vs := range values {
		terms := make([]*ast.Term, len(vs))
		for i, v := range vs {
			terms[i] = ast.StringTerm(v)
		}
		query.Insert(ast.StringTerm(key), ast.ArrayTerm(terms...))
	}
	return ast.NewArray(segments...), query, nil
}

// parseJSONBody decodes a JSON body. A body that is not JSON, or not valid
// JSON, leaves parsed_body undefined so that rules depending on it do not
// match (a policy refuses rather than guesses).
func parseJSONBody(contentType, body string, rawBody []byte) (ast.Value, bool) {
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
	if len(data) == 0 {
		return nil, false
	}
	parsed, err := parseJSON(data)
	if err != nil {
		return nil, false
	}
	return parsed, true
}

// decoders are reused across Checks; a pooled one reads from noInput, so
// it keeps no body alive.
var (
	noInput  = bytes.NewReader(nil)
	decoders = sync.Pool{New: func() any { return jsontext.NewDecoder(noInput) }}
)

// parseJSON parses one JSON document into OPA's value, numbers kept as
// written (as json.Number would).
func parseJSON(data []byte) (ast.Value, error) {
	dec := decoders.Get().(*jsontext.Decoder)
	defer func() {
		dec.Reset(noInput)
		decoders.Put(dec)
	}()
	// From a bytes.Buffer the decoder parses in place, without a copy.
	dec.Reset(bytes.NewBuffer(data), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	v, err := readJSON(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		return nil, errTrailingData
	}
	return v, nil
}

var errTrailingData = errors.New("data after the JSON value")

func readJSON(dec *jsontext.Decoder) (ast.Value, error) {
	tok, err := dec.ReadToken()
	if err != nil {
		return nil, err
	}
	switch tok.Kind() {
	case 'n':
		return ast.InternedNullValue, nil
	case 't', 'f':
		return ast.InternedValue(tok.Bool()), nil
	case '"':
		return ast.String(tok.String()), nil
	case '0':
		return ast.Number(tok.String()), nil
	case '[':
		var terms []*ast.Term
		for dec.PeekKind() != ']' {
			v, err := readJSON(dec)
			if err != nil {
				return nil, err
			}
			terms = append(terms, ast.NewTerm(v))
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		return ast.NewArray(terms...), nil
	case '{':
		obj := ast.NewObject()
		for dec.PeekKind() != '}' {
			tok, err := dec.ReadToken()
			if err != nil {
				return nil, err
			}
			// A token is valid only until the next read.
			name := ast.StringTerm(tok.String())
			v, err := readJSON(dec)
			if err != nil {
				return nil, err
			}
			// A repeated name replaces the earlier value, as encoding/json does.
			obj.Insert(name, ast.NewTerm(v))
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		return obj, nil
	default:
		return nil, errors.New("unexpected JSON token")
	}
}
