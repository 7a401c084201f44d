package extauthz

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// oracleInput is the input document as the plugin used to build it, kept
// as the reference the direct construction is proven against: protojson
// encodes the CheckRequest, a JSON decoder reads it back, the parsed_*
// keys are added as plain Go values (by the rules of input.go, written
// out again here), and the whole map is converted to OPA's value.
func oracleInput(req *authv3.CheckRequest, skipBodyParse bool) (ast.Value, error) {
	raw, err := protojson.Marshal(req)
	if err != nil {
		return nil, err
	}
	var input map[string]any
	if err := util.UnmarshalJSON(raw, &input); err != nil {
		return nil, err
	}
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	full, rawQuery := httpReq.GetPath(), ""
	if i := strings.IndexByte(full, '?'); i >= 0 {
		full, rawQuery = full[:i], full[i+1:]
	}
	decoded, err := url.PathUnescape(full)
	if err != nil {
		return nil, err
	}
	for strings.HasPrefix(decoded, "/") {
		decoded = decoded[1:]
	}
	segments := []any{}
	for _, s := range strings.Split(decoded, "/") {
		segments = append(segments, s)
	}
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, err
	}
	query := stringListsOf(values)
	if principal := req.GetAttributes().GetSource().GetPrincipal(); principal != "" {
		input["source_principal"] = principal
	}
	nexus := map[string]any{}
	if auth := httpReq.GetHeaders()["authorization"]; len(auth) >= 7 && strings.ToLower(auth[:7]) == "bearer " {
		if credential := strings.TrimSpace(auth[7:]); credential != "" {
			nexus["credential_sha256"] = fmt.Sprintf("%x", sha256.Sum256([]byte(credential)))
		}
	}
	input["nexus"] = nexus
	input["parsed_path"] = segments
	input["parsed_query"] = query
	input["version"] = map[string]any{"encoding": "protojson", "ext_authz": "v3"}
	if !skipBodyParse {
		body, truncated, err := oracleBody(httpReq.GetHeaders(), httpReq.GetBody(), httpReq.GetRawBody())
		if err != nil {
			return nil, err
		}
		input["parsed_body"] = body
		input["truncated_body"] = truncated
	}
	return ast.InterfaceToValue(input)
}

// oracleBody is upstream's getParsedBody, with encoding/json.
func oracleBody(headers map[string]string, body string, rawBody []byte) (any, bool, error) {
	if headers["x-envoy-auth-partial-body"] == "true" {
		return nil, true, nil
	}
	contentType := strings.ToLower(headers["content-type"])
	if body == "" {
		body = string(rawBody)
	}
	if body == "" {
		return nil, false, nil
	}
	mediaType, params, _ := mime.ParseMediaType(headers["content-type"])
	isJSON := strings.Contains(contentType, "application/json") || strings.HasSuffix(mediaType, "+json")
	isForm := strings.Contains(contentType, "application/x-www-form-urlencoded")
	isMultipart := strings.Contains(contentType, "multipart/form-data")
	if !isJSON && !isForm && !isMultipart {
		return nil, false, nil
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, err
		}
		if n > int64(len(body)) {
			return nil, true, nil
		}
	}
	switch {
	case isJSON:
		var v any
		err := util.UnmarshalJSON([]byte(body), &v)
		return v, false, err
	case isForm:
		values, err := url.ParseQuery(body)
		if err != nil {
			return nil, false, err
		}
		return stringListsOf(values), false, nil
	}
	out := map[string]any{}
	reader := multipart.NewReader(strings.NewReader(body), params["boundary"])
	for {
		part, err := reader.NextPart()
		if err == io.EOF {
			return out, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		if part.FormName() == "" {
			continue
		}
		content, err := io.ReadAll(part)
		if err != nil {
			return nil, false, err
		}
		var value any = string(content)
		if strings.Contains(part.Header.Get("Content-Type"), "application/json") {
			if err := util.UnmarshalJSON(content, &value); err != nil {
				return nil, false, err
			}
		}
		list, _ := out[part.FormName()].([]any)
		out[part.FormName()] = append(list, value)
	}
}

func stringListsOf(values map[string][]string) map[string]any {
	out := map[string]any{}
	for key, vs := range values {
		list := make([]any, len(vs))
		for i, v := range vs {
			list[i] = v
		}
		out[key] = list
	}
	return out
}

// oracleCases are requests covering every encoding protojson has, the
// edges of each, and bodies of every kind.
func oracleCases(t testing.TB) map[string]*authv3.CheckRequest {
	t.Helper()
	jsonHeaders := map[string]string{"content-type": "application/json"}
	cases := map[string]*authv3.CheckRequest{
		"rich":                 richCheck(),
		"benchmark chat":       benchChat(),
		"benchmark tool":       benchTool(),
		"no attributes at all": {},
		"attributes without http": {Attributes: &authv3.AttributeContext{
			Source: &authv3.AttributeContext_Peer{Service: "svc"},
		}},
		"unicode everywhere": httpCheck("GET", "/v1/chats/%C3%A9t%C3%A9?q=%E2%9C%93", map[string]string{
			"x-name": "Zoë 🚀 \u2028 \"quoted\" \\ <tag>",
		}, ""),
		"body with numbers as written, escapes and literals": httpCheck("POST", "/v1/tools/t:invoke", jsonHeaders,
			`{"a":2.50,"n":[1E5,-0,0.1e-7,12345678901234567890123],"s":"\u00e9\ud83d\ude80\n\/","z":null,"t":true,"f":false,"e":{},"l":[]}`),
		"body as application/problem+json": httpCheck("POST", "/v1/tools/t:invoke", map[string]string{"content-type": "application/problem+json"}, `{"a":1}`),
		"body as Application/JSON":         httpCheck("POST", "/v1/tools/t:invoke", map[string]string{"content-type": "Application/JSON; charset=UTF-8"}, `{"a":1}`),
		"urlencoded form":                  httpCheck("POST", "/v1/tools/t:invoke", map[string]string{"content-type": "application/x-www-form-urlencoded"}, `a=1&a=2&b=x+y&c`),
		"multipart form": httpCheck("POST", "/v1/tools/t:invoke", map[string]string{"content-type": "multipart/form-data; boundary=XyZ"},
			"--XyZ\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"k\":[1,2]}\r\n"+
				"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"+
				"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nagain\r\n--XyZ--\r\n"),
		"body of another type": httpCheck("POST", "/v1/tools/t:invoke", map[string]string{"content-type": "text/plain"}, `{"a":1}`),
		"body shorter than content-length": httpCheck("POST", "/v1/tools/t:invoke", map[string]string{
			"content-type": "application/json", "content-length": "100",
		}, `{"a":1}`),
		"body cut short by Envoy": httpCheck("POST", "/v1/tools/t:invoke", map[string]string{
			"content-type": "application/json", partialBodyHeader: "true",
		}, `{"a":`),
		"no body":                 httpCheck("POST", "/v1/tools/t:invoke", jsonHeaders, ""),
		"body with trailing data": httpCheck("POST", "/v1/tools/t:invoke", jsonHeaders, `{"a":1} {"b":2}`),
		"body not JSON at all":    httpCheck("POST", "/v1/tools/t:invoke", jsonHeaders, `{"a":`),
		"body nested deep":        httpCheck("POST", "/v1/tools/t:invoke", jsonHeaders, strings.Repeat(`{"a":[`, 100)+strings.Repeat("]}", 100)),
		"body only in raw_body": func() *authv3.CheckRequest {
			r := httpCheck("POST", "/v1/tools/t:invoke", jsonHeaders, "")
			r.Attributes.Request.Http.RawBody = []byte(`{"raw":true}`)
			return r
		}(),
	}

	timestamps := map[string]time.Time{
		"whole seconds":   time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		"milliseconds":    time.Date(2026, 1, 2, 3, 4, 5, 7_000_000, time.UTC),
		"microseconds":    time.Date(2026, 1, 2, 3, 4, 5, 7_000, time.UTC),
		"nanoseconds":     time.Date(2026, 1, 2, 3, 4, 5, 7, time.UTC),
		"before 1970":     time.Date(1960, 6, 1, 0, 0, 0, 500_000_000, time.UTC),
		"the last second": time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
	}
	for name, ts := range timestamps {
		r := httpCheck("GET", "/", nil, "")
		r.Attributes.Request.Time = timestamppb.New(ts)
		cases["timestamp: "+name] = r
	}

	numbers := map[string]float64{
		"zero": 0, "negative zero": math.Copysign(0, -1), "integer": 42, "fraction": 0.1,
		"just below 1e21": 999999999999999900000, "1e21": 1e21, "1e-6": 1e-6, "just below 1e-6": 9.99e-7,
		"tiny": 5e-324, "largest": math.MaxFloat64, "negative": -123.456e-10,
	}
	for name, f := range numbers {
		r := httpCheck("GET", "/", nil, "")
		md, err := structpb.NewStruct(map[string]any{"n": f, "list": []any{f, "s", false, nil, map[string]any{}}})
		if err != nil {
			t.Fatal(err)
		}
		r.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"f": md}}
		cases["double: "+name] = r
	}

	// 64-bit and unsigned integers, and an enum number the descriptor does
	// not name.
	ints := httpCheck("GET", "/", nil, "")
	ints.Attributes.Request.Http.Size = -1
	ints.Attributes.Source.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: math.MaxUint32}
	ints.Attributes.Source.Address.GetSocketAddress().Protocol = corev3.SocketAddress_Protocol(7)
	cases["integers and an unnamed enum"] = ints

	// Typed metadata holds Any: protojson resolves the type and writes @type.
	typed := httpCheck("GET", "/", nil, "")
	anyDuration, err := anypb.New(durationpb.New(1500 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	anyWrapper, err := anypb.New(wrapperspb.Int64(-7))
	if err != nil {
		t.Fatal(err)
	}
	anyAddress, err := anypb.New(socketAddress("10.0.0.1", 8080))
	if err != nil {
		t.Fatal(err)
	}
	typed.Attributes.MetadataContext = &corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{
		"duration": anyDuration, "wrapper": anyWrapper, "address": anyAddress,
	}}
	cases["typed metadata (Any)"] = typed
	return cases
}

// The input built straight from the proto is the input the protojson
// round trip built: same keys, same encodings, same numbers as text.
func TestTheDirectInputIsTheProtojsonInput(t *testing.T) {
	for name, req := range oracleCases(t) {
		for _, skipBody := range []bool{false, true} {
			t.Run(name, func(t *testing.T) {
				want, wantErr := oracleInput(req, skipBody)
				// No depth bound here: encoding/json has none below 10000.
				got, gotErr := buildInput(req, inputOptions{skipBodyParse: skipBody, maxBodyDepth: 1000})
				if (wantErr != nil) != (gotErr != nil) {
					t.Fatalf("oracle error %v, direct error %v", wantErr, gotErr)
				}
				if wantErr != nil {
					return
				}
				if ast.Compare(got, want) != 0 {
					t.Errorf("direct input\n%s\noracle input\n%s", got, want)
				}
				gotPlain, err := ast.JSON(got)
				if err != nil {
					t.Fatal(err)
				}
				wantPlain, err := ast.JSON(want)
				if err != nil {
					t.Fatal(err)
				}
				// As text too: ast.Compare takes 1.0 and 1 for equal numbers.
				if g, w := mustJSON(t, gotPlain), mustJSON(t, wantPlain); g != w {
					t.Errorf("direct input as JSON\n%s\noracle input as JSON\n%s", g, w)
				}
			})
		}
	}
}

// Where protojson refuses to encode, so does the direct construction.
func TestWhatProtojsonCannotEncodeIsARequestParseError(t *testing.T) {
	cases := map[string]func(r *authv3.CheckRequest){
		"a Value without a kind": func(r *authv3.CheckRequest) {
			r.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"f": {Fields: map[string]*structpb.Value{"empty": {}}},
			}}
		},
		"a NaN in a Value": func(r *authv3.CheckRequest) {
			r.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"f": {Fields: map[string]*structpb.Value{"nan": structpb.NewNumberValue(math.NaN())}},
			}}
		},
		"a timestamp past 9999": func(r *authv3.CheckRequest) {
			r.Attributes.Request.Time = &timestamppb.Timestamp{Seconds: maxTimestampSeconds + 1}
		},
		"negative nanoseconds": func(r *authv3.CheckRequest) {
			r.Attributes.Request.Time = &timestamppb.Timestamp{Seconds: 1, Nanos: -1}
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			req := httpCheck("GET", "/", nil, "")
			mutate(req)
			if _, err := protojson.Marshal(req); err == nil {
				t.Fatal("protojson encodes it; the case is wrong")
			}
			_, err := buildInput(req, defaultInputOptions)
			assertCheckError(t, err, CodeRequestParse)
		})
	}
}
