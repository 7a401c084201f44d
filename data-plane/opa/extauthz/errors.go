package extauthz

import (
	"errors"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/open-policy-agent/opa/v1/topdown"
)

// Error codes: every way a Check can fail has one, and it is what Envoy's
// log, OPA's decision log and the audit service see. The names follow the
// upstream opa-envoy-plugin's internal/errors.go where the failure is the
// same one.
const (
	// CodeStartTxn: no read transaction on OPA's store could be opened.
	CodeStartTxn = "start_txn_error"
	// CodeRequestParse: the request's path or query string cannot be
	// decoded (a malformed percent-escape, a ";" in the query).
	CodeRequestParse = "request_parse_error"
	// CodeEval: evaluating the policy failed (a conflict, a built-in error,
	// a cancelled query); the logged error is OPA's own, with its code.
	CodeEval = "envoyauth_eval_error"
	// CodeUndefined: the decision is undefined, i.e. the policy has no
	// default for it.
	CodeUndefined = "envoyauth_undefined_decision"
	// CodeResult: the decision does not have the shape Envoy's answer is
	// built from (allowed not a boolean, an unknown HTTP status, ...).
	CodeResult = "envoyauth_result_error"
	// CodeDecisionLog: the decision log refused the decision; a decision
	// the audit trail cannot record is not made.
	CodeDecisionLog = "decision_log_error"
)

// checkError is a failed Check. Its Error() is the gRPC status message Envoy
// logs: the code and a sentence written here, never a wrapped library
// message. It marshals as {"code", "message"}, which is the shape OPA's
// decision log gives an error and the audit service reads the code from.
type checkError struct {
	Code    string `json:"code"`
	Message string `json:"message"`

	status codes.Code
	cause  error
}

func newCheckError(status codes.Code, code, message string, cause error) *checkError {
	return &checkError{Code: code, Message: message, status: status, cause: cause}
}

func (e *checkError) Error() string { return e.Code + ": " + e.Message }

func (e *checkError) Unwrap() error { return e.cause }

// GRPCStatus makes grpc-go answer with this code and message.
func (e *checkError) GRPCStatus() *grpcstatus.Status {
	return grpcstatus.New(e.status, e.Error())
}

// resultError is a decision of the wrong shape; message names the field.
func resultError(message string) *checkError {
	return newCheckError(codes.Internal, CodeResult, message, nil)
}

// evalError wraps a failed evaluation. The message carries OPA's error code
// (eval_conflict_error, eval_builtin_error, ...) but not OPA's message,
// which may quote values from the request.
func evalError(err error) *checkError {
	message := "the policy evaluation failed"
	if te, ok := errors.AsType[*topdown.Error](err); ok {
		message += " (" + te.Code + ")"
	}
	return newCheckError(codes.Internal, CodeEval, message, err)
}

var errUndefined = newCheckError(codes.Internal, CodeUndefined,
	"the decision is undefined: the policy must give it a default", nil)

// loggedError is what the decision log records as the event's error: OPA's
// own error for a failed evaluation (its code, message and location are
// what a policy author needs), ours for everything else.
func loggedError(err error) error {
	if err == nil {
		return nil
	}
	if ce, ok := errors.AsType[*checkError](err); ok && ce.Code == CodeEval && ce.cause != nil {
		return ce.cause
	}
	return err
}
