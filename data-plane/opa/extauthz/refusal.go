package extauthz

import (
	"encoding/json"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
)

// A refusal is an answer the plugin gives without asking the policy: the
// request cannot be made into an input the policy and the upstream would
// read alike (a malformed path, a body with repeated keys), or the
// enforcer is over capacity. Envoy gets an ordinary denied answer (status,
// JSON body with the reason), the client sees why at once, and the
// decision log records it as a decision like any other, so every request
// Envoy let through or refused has its leaf in the audit log.
type refusal struct {
	status   int
	code     string // the decision log's error code; "" for load shedding
	rule     string
	message  string
	controls []string
	headers  []*corev3.HeaderValueOption
	shed     string // why it was shed (admission.go's shed reasons); "" when not
	// reservation says why a budget hold was refused (budgethold.go); nil
	// for other refusals.
	reservation map[string]any
	cause       error
}

// Controls a refusal is evidence for. Every id must be in the audit
// service's catalogs (compliance-mappings/), which refuse unknown ones.
var (
	// Inputs are checked for completeness and accuracy; application
	// security requirements.
	inputControls = []string{"SOC2:PI1.2", "ISO27001:A.8.26"}
	// Capacity is managed so demand can be met; capacity management.
	capacityControls = []string{"SOC2:A1.1", "ISO27001:A.8.6"}
)

// Reason rules of the refusals.
const (
	ruleTargetInvalid = "nexus.request.target_invalid"
)

func (r *refusal) Error() string { return r.rule + ": " + r.message }

func (r *refusal) Unwrap() error { return r.cause }

// badRequest refuses a request whose input cannot be built as the policy
// and the upstream would both read it.
func badRequest(code, rule, message string, cause error) *refusal {
	return &refusal{status: 400, code: code, rule: rule, message: message, controls: inputControls, cause: cause}
}

func (r *refusal) reason() map[string]any {
	controls := make([]any, len(r.controls))
	for i, c := range r.controls {
		controls[i] = c
	}
	return map[string]any{"rule": r.rule, "message": r.message, "controls": controls}
}

// decision is the refusal as the decision log records it, in the shape of
// the gateway's decisions (allowed, http_status, reasons).
func (r *refusal) decision() any {
	d := map[string]any{
		"allowed":     false,
		"http_status": json.Number(strconv.Itoa(r.status)),
		"reasons":     []any{r.reason()},
	}
	if r.shed != "" {
		d["shed"] = r.shed
	}
	if r.reservation != nil {
		d["reservation"] = r.reservation
	}
	return d
}

// loggedError is the decision log's error for the refusal: its code, so a
// refusal the plugin made is told apart from one the policy made.
func (r *refusal) loggedError() error {
	if r.code == "" {
		return nil
	}
	return newCheckError(codes.InvalidArgument, r.code, r.message, nil)
}

// response is Envoy's answer: the status, the refusal's headers, and the
// body the gateway policy gives its own refusals,
// {"error": "denied", "reasons": [{rule, message, controls}]}. In dry-run
// mode the request goes through, as every other refusal does then.
func (r *refusal) response(decisionID string, dryRun bool) *authv3.CheckResponse {
	if dryRun {
		// Only the decision id: cannot fail.
		md, _ := dynamicMetadata(nil, decisionID)
		return &authv3.CheckResponse{
			Status:          &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
			DynamicMetadata: md,
		}
	}
	// Strings and lists of strings only: encoding cannot fail.
	body, _ := json.Marshal(map[string]any{"error": "denied", "reasons": []any{r.reason()}})
	headers := append([]*corev3.HeaderValueOption{
		headerOption("content-type", "application/json", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
	}, r.headers...)
	// Only the decision id: cannot fail either.
	md, _ := dynamicMetadata(nil, decisionID)
	return deniedResponse(r.status, headers, string(body), md)
}
