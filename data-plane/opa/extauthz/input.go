package extauthz

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/open-policy-agent/opa/v1/ast"
)

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
func buildInput(req *authv3.CheckRequest, opts inputOptions) (ast.Object, error) {
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

	// Like upstream: with body parsing off, neither key is there.
	if !opts.skipBodyParse {
		body, truncated, err := parseBody(httpReq.GetHeaders(), httpReq.GetBody(), httpReq.GetRawBody(), opts.maxBodyDepth)
		if err != nil {
			return input, err
		}
		input.Insert(keyParsedBody, ast.NewTerm(body))
		input.Insert(keyTruncatedBody, ast.InternedTerm(truncated))
	}
	return input, nil
}

// inputOptions are the configuration's say in how the input is built.
type inputOptions struct {
	skipBodyParse bool
	maxBodyDepth  int
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
