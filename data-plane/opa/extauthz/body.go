package extauthz

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/open-policy-agent/opa/v1/ast"
)

// partialBodyHeader is set by Envoy when it forwarded only the first
// max_request_bytes of the body (allow_partial_message: true).
const partialBodyHeader = "x-envoy-auth-partial-body"

// defaultMaxBodyDepth bounds how deeply a JSON body may nest (objects and
// arrays; a scalar is depth 0): deep enough for chat messages and tool
// arguments, shallow enough that no policy walks a pathological document.
const defaultMaxBodyDepth = 32

// Reason rules and error codes of refused bodies.
const (
	CodeBodyInvalid      = "request_body_invalid"
	CodeBodyDuplicateKey = "request_body_duplicate_key"
	CodeBodyTooDeep      = "request_body_too_deep"

	ruleBodyInvalid      = "nexus.request.body_invalid"
	ruleBodyDuplicateKey = "nexus.request.body_duplicate_key"
	ruleBodyTooDeep      = "nexus.request.body_too_deep"
)

// parseBody is parsed_body and truncated_body as upstream computes them
// (envoyauth/request.go, getParsedBody): nothing is parsed from a body
// Envoy cut short (its x-envoy-auth-partial-body header, or fewer bytes
// than content-length says), a JSON body is parsed into its value, a
// urlencoded form into {name: [values]}, a multipart form into
// {name: [values]} with JSON parts parsed; any other body, or none, is
// null. The string body wins over raw_body.
//
// Deliberate differences, each refusing what upstream would let through
// as something the upstream service may read differently:
//   - A JSON body with a repeated object key, or nested deeper than
//     maxDepth, or not valid UTF-8, is refused (400), as is invalid JSON
//     (upstream refuses that too). A service that keeps the first of two
//     keys would act on a value the policy never saw.
//   - Media types are compared case-insensitively, and structured
//     "+json" types (RFC 6839) are JSON too.
func parseBody(headers map[string]string, body string, rawBody []byte, maxDepth int) (ast.Value, bool, error) {
	if headers[partialBodyHeader] == "true" {
		return ast.InternedNullValue, true, nil
	}
	contentType := strings.ToLower(headers["content-type"])
	data := []byte(body)
	if len(data) == 0 {
		data = rawBody
	}
	kind := bodyKind(contentType)
	if kind == "" || len(data) == 0 {
		return ast.InternedNullValue, false, nil
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, badRequest(CodeRequestParse, ruleTargetInvalid, "the content-length header is not a number", err)
		}
		if n > int64(len(data)) {
			return ast.InternedNullValue, true, nil
		}
	}
	var (
		v   ast.Value
		err error
	)
	switch kind {
	case "json":
		v, err = parseJSON(data, maxDepth)
	case "form":
		v, err = parseForm(string(data))
	case "multipart":
		// The boundary is case-sensitive: the header as sent.
		v, err = parseMultipart(headers["content-type"], data, maxDepth)
	}
	if err != nil {
		return nil, false, err
	}
	return v, false, nil
}

func bodyKind(contentType string) string {
	switch {
	case strings.Contains(contentType, "application/json"):
		return "json"
	case strings.Contains(contentType, "application/x-www-form-urlencoded"):
		return "form"
	case strings.Contains(contentType, "multipart/form-data"):
		return "multipart"
	}
	if mediaType, _, err := mime.ParseMediaType(contentType); err == nil && strings.HasSuffix(mediaType, "+json") {
		return "json"
	}
	return ""
}

func parseForm(data string) (ast.Value, error) {
	values, err := url.ParseQuery(data)
	if err != nil {
		return nil, badRequest(CodeBodyInvalid, ruleBodyInvalid, "the form body has a malformed percent-escape or a \";\"", err)
	}
	return stringLists(values), nil
}

// stringLists is {name: [values]} as OPA's value.
func stringLists(values map[string][]string) ast.Object {
	obj := ast.NewObjectWithCapacity(len(values))
	for key, vs := range values {
		terms := make([]*ast.Term, len(vs))
		for i, v := range vs {
			terms[i] = ast.StringTerm(v)
		}
		obj.Insert(ast.StringTerm(key), ast.ArrayTerm(terms...))
	}
	return obj
}

func parseMultipart(contentType string, data []byte, maxDepth int) (ast.Value, error) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, badRequest(CodeBodyInvalid, ruleBodyInvalid, "the multipart body's content-type cannot be parsed", err)
	}
	boundary, ok := params["boundary"]
	if !ok {
		return ast.InternedNullValue, nil
	}
	values := map[string][]*ast.Term{}
	var names []string
	reader := multipart.NewReader(bytes.NewReader(data), boundary)
	for {
		part, err := reader.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, badRequest(CodeBodyInvalid, ruleBodyInvalid, "the multipart body is malformed", err)
		}
		name := part.FormName()
		if name == "" {
			continue
		}
		content, err := io.ReadAll(part)
		if err != nil {
			return nil, badRequest(CodeBodyInvalid, ruleBodyInvalid, "the multipart body is malformed", err)
		}
		var value ast.Value = ast.String(content)
		if strings.Contains(strings.ToLower(part.Header.Get("Content-Type")), "application/json") {
			if value, err = parseJSON(content, maxDepth); err != nil {
				return nil, err
			}
		}
		if _, seen := values[name]; !seen {
			names = append(names, name)
		}
		values[name] = append(values[name], ast.NewTerm(value))
	}
	obj := ast.NewObjectWithCapacity(len(names))
	for _, name := range names {
		obj.Insert(ast.StringTerm(name), ast.ArrayTerm(values[name]...))
	}
	return obj, nil
}

// decoders are reused across Checks; a pooled one reads from noInput, so
// it keeps no body alive.
var (
	noInput  = bytes.NewReader(nil)
	decoders = sync.Pool{New: func() any { return jsontext.NewDecoder(noInput) }}
)

// parseJSON parses one JSON document into OPA's value, numbers kept as
// written (as json.Number keeps them). It refuses what RFC 8259 leaves to
// the parser and parsers answer differently: repeated names in an object
// (compared after unescaping), invalid UTF-8 and unpaired surrogates; and
// nesting deeper than maxDepth.
func parseJSON(data []byte, maxDepth int) (ast.Value, error) {
	dec := decoders.Get().(*jsontext.Decoder)
	defer func() {
		dec.Reset(noInput)
		decoders.Put(dec)
	}()
	// From a bytes.Buffer the decoder parses in place, without a copy.
	dec.Reset(bytes.NewBuffer(data))
	p := jsonParser{dec: dec, maxDepth: maxDepth}
	v, err := p.value(0)
	if err != nil {
		return nil, jsonRefusal(err, dec.InputOffset(), maxDepth)
	}
	end := dec.InputOffset()
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		rest := data[end:]
		end += int64(len(rest) - len(bytes.TrimLeft(rest, " \t\r\n")))
		return nil, jsonRefusal(errTrailingData, end, maxDepth)
	}
	return v, nil
}

var (
	errTrailingData = errors.New("data after the JSON value")
	errTooDeep      = errors.New("nested too deeply")
)

// jsonRefusal names what is wrong with the body, and where, without
// quoting it: the message reaches the client and the decision log.
func jsonRefusal(err error, offset int64, maxDepth int) *refusal {
	if se, ok := errors.AsType[*jsontext.SyntacticError](err); ok {
		offset = se.ByteOffset
	}
	at := " (at byte " + strconv.FormatInt(offset, 10) + ")"
	switch {
	case errors.Is(err, jsontext.ErrDuplicateName):
		return badRequest(CodeBodyDuplicateKey, ruleBodyDuplicateKey, "the JSON body repeats an object key"+at, err)
	case errors.Is(err, errTooDeep):
		return badRequest(CodeBodyTooDeep, ruleBodyTooDeep, "the JSON body nests deeper than "+strconv.Itoa(maxDepth)+" levels"+at, err)
	default:
		return badRequest(CodeBodyInvalid, ruleBodyInvalid, "the JSON body is not valid JSON"+at, err)
	}
}

type jsonParser struct {
	dec      *jsontext.Decoder
	maxDepth int
}

func (p *jsonParser) value(depth int) (ast.Value, error) {
	if kind := p.dec.PeekKind(); (kind == '{' || kind == '[') && depth >= p.maxDepth {
		return nil, errTooDeep
	}
	tok, err := p.dec.ReadToken()
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
		// Terms are collected by value and pointed to once the list is
		// complete: a few allocations per list instead of one per element.
		var elems []ast.Term
		for p.dec.PeekKind() != ']' {
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			elems = append(elems, ast.Term{Value: v})
		}
		if _, err := p.dec.ReadToken(); err != nil {
			return nil, err
		}
		terms := make([]*ast.Term, len(elems))
		for i := range elems {
			terms[i] = &elems[i]
		}
		return ast.NewArray(terms...), nil
	case '{':
		var members []ast.Term // name, value, name, value, ...
		for p.dec.PeekKind() != '}' {
			tok, err := p.dec.ReadToken()
			if err != nil {
				return nil, err
			}
			// A token is valid only until the next read.
			name := ast.String(tok.String())
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			members = append(members, ast.Term{Value: name}, ast.Term{Value: v})
		}
		if _, err := p.dec.ReadToken(); err != nil {
			return nil, err
		}
		pairs := make([][2]*ast.Term, len(members)/2)
		for i := range pairs {
			pairs[i] = [2]*ast.Term{&members[2*i], &members[2*i+1]}
		}
		// The decoder refused repeated names: the pairs are unique.
		return ast.NewObject(pairs...), nil
	default:
		return nil, errors.New("unexpected JSON token")
	}
}
