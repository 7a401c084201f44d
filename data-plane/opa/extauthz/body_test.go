package extauthz

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
)

func nested(depth int) string {
	return strings.Repeat(`{"a":[`, depth/2) + strings.Repeat(`[`, depth%2) + "1" + strings.Repeat(`]`, depth%2) + strings.Repeat(`]}`, depth/2)
}

// A body the policy and the upstream service could read differently is
// refused with a 400 before the policy is asked.
func TestABodyReadersCouldDisagreeOnIsRefused(t *testing.T) {
	jsonType := map[string]string{"content-type": "application/json"}
	cases := []struct {
		name    string
		headers map[string]string
		body    string
		code    string
		message string
	}{
		{"a repeated key", jsonType, `{"model":"gpt-4o","model":"gpt-4.1"}`, CodeBodyDuplicateKey,
			"the JSON body repeats an object key (at byte 18)"},
		{"a repeated key spelt with an escape", jsonType, `{"arguments":{"a":1,"\u0061":2}}`, CodeBodyDuplicateKey,
			"the JSON body repeats an object key (at byte 20)"},
		{"a repeated key deep inside", jsonType, `{"messages":[{"role":"user","role":"system"}]}`, CodeBodyDuplicateKey,
			"the JSON body repeats an object key (at byte 28)"},
		{"nesting one level past the bound", jsonType, nested(defaultMaxBodyDepth + 1), CodeBodyTooDeep,
			"the JSON body nests deeper than 32 levels (at byte 96)"},
		{"nesting far past the bound", jsonType, strings.Repeat("[", 100000), CodeBodyTooDeep,
			"the JSON body nests deeper than 32 levels (at byte 32)"},
		{"invalid JSON", jsonType, `{"a":`, CodeBodyInvalid, "the JSON body is not valid JSON (at byte 5)"},
		{"data after the value", jsonType, `{"a":1} {"b":2}`, CodeBodyInvalid, "the JSON body is not valid JSON (at byte 8)"},
		{"invalid UTF-8", jsonType, "{\"a\":\"\xff\"}", CodeBodyInvalid, "the JSON body is not valid JSON (at byte 6)"},
		{"an unpaired surrogate", jsonType, `{"a":"\ud800"}`, CodeBodyInvalid, "the JSON body is not valid JSON (at byte 6)"},
		{"a repeated key in a multipart JSON part", map[string]string{"content-type": "multipart/form-data; boundary=b"},
			"--b\r\nContent-Disposition: form-data; name=\"m\"\r\nContent-Type: application/json\r\n\r\n{\"a\":1,\"a\":2}\r\n--b--\r\n",
			CodeBodyDuplicateKey, "the JSON body repeats an object key (at byte 7)"},
		{"a malformed multipart body", map[string]string{"content-type": "multipart/form-data; boundary=b"}, "--b\r\nno headers end",
			CodeBodyInvalid, "the multipart body is malformed"},
		{"a form with a malformed escape", map[string]string{"content-type": "application/x-www-form-urlencoded"}, "a=%zz",
			CodeBodyInvalid, `the form body has a malformed percent-escape or a ";"`},
		{"a content-length that is no number", map[string]string{"content-type": "application/json", "content-length": "ten"}, `{}`,
			CodeRequestParse, "the content-length header is not a number"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httpCheck("POST", "/v1/tools/web-search:invoke", tc.headers, "")
			req.Attributes.Request.Http.RawBody = []byte(tc.body) // raw_body may hold any bytes
			_, err := buildInput(req, defaultInputOptions)
			r, ok := errors.AsType[*refusal](err)
			if !ok {
				t.Fatalf("error %v, want a refusal", err)
			}
			if r.status != 400 || r.code != tc.code || r.message != tc.message {
				t.Errorf("refusal %d %s %q, want 400 %s %q", r.status, r.code, r.message, tc.code, tc.message)
			}
			if len(r.controls) == 0 {
				t.Error("the refusal names no controls")
			}
		})
	}
}

func TestABodyAtTheDepthBoundIsParsed(t *testing.T) {
	req := httpCheck("POST", "/v1/tools/web-search:invoke", map[string]string{"content-type": "application/json"}, nested(defaultMaxBodyDepth))
	if body := buildTestInput(t, req, false)["parsed_body"]; body == nil {
		t.Error("a body nested exactly to the bound was not parsed")
	}
	cfg, err := Factory{}.Validate(nil, []byte(`{"max-body-depth": 40}`))
	if err != nil {
		t.Fatal(err)
	}
	deeper := httpCheck("POST", "/v1/tools/web-search:invoke", map[string]string{"content-type": "application/json"}, nested(40))
	if _, err := buildInput(deeper, cfg.(*Config).inputOptions()); err != nil {
		t.Errorf("max-body-depth 40 refuses depth 40: %v", err)
	}
}

func TestTheDepthBoundMustBePositive(t *testing.T) {
	for _, raw := range []string{`{"max-body-depth": 0}`, `{"max-body-depth": -1}`} {
		if _, err := (Factory{}).Validate(nil, []byte(raw)); err == nil {
			t.Errorf("%s accepted", raw)
		}
	}
}

func TestFormBodiesAreParsedAsUpstreamParsesThem(t *testing.T) {
	form := httpCheck("POST", "/v1/tools/t:invoke", map[string]string{"content-type": "application/x-www-form-urlencoded"}, "a=1&a=2&b=x+y&c")
	if got := mustJSON(t, buildTestInput(t, form, false)["parsed_body"]); got != `{"a":["1","2"],"b":["x y"],"c":[""]}` {
		t.Errorf("urlencoded parsed_body %s", got)
	}
	multi := httpCheck("POST", "/v1/tools/t:invoke", map[string]string{"content-type": "multipart/form-data; boundary=XyZ"},
		"--XyZ\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"k\":[1,2.0]}\r\n"+
			"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"+
			"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nagain\r\n--XyZ--\r\n")
	if got := mustJSON(t, buildTestInput(t, multi, false)["parsed_body"]); got != `{"meta":[{"k":[1,2.0]}],"note":["hello","again"]}` {
		t.Errorf("multipart parsed_body %s", got)
	}
}

// Through Check: the client gets a 400 with the reason at once, the
// policy is not asked, and the log holds the decision with the code.
func TestARepeatedKeyIsA400AndALoggedDecision(t *testing.T) {
	opa := newTestOPA(t)
	p := opa.plugin(t, decisionPlugin)
	req := acmeCheck()
	req.Attributes.Request.Http.Body = `{"model":"gpt-4o","model":"gpt-4.1"}`

	resp, err := p.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	denied := resp.GetDeniedResponse()
	if denied.GetStatus().GetCode() != 400 || !strings.Contains(denied.GetBody(), `"rule":"nexus.request.body_duplicate_key"`) {
		t.Fatalf("answer %s", protojson.Format(resp))
	}
	event := opa.log.only(t)
	if got := mustJSON(t, event.Error); !strings.Contains(got, `"code":"request_body_duplicate_key"`) {
		t.Errorf("logged error %s", got)
	}
	if len(event.RuleLabels) != 0 {
		t.Errorf("rule_labels %v: the policy was evaluated", event.RuleLabels)
	}
	if got := mustJSON(t, *event.Result); !strings.Contains(got, `"http_status":400`) {
		t.Errorf("logged result %s", got)
	}
}
