package extauthz

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/uuid"
	"google.golang.org/grpc"

	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/server"
)

// ReceiptPath is the decision log `path` of a receipt event, the
// contract's RECEIPT_PATH: the audit intake stores such an event as a
// receipt for the decision it names, not as a decision.
const ReceiptPath = "nexus/receipt"

// requestIDHeader is the header Envoy identifies a request by, in the
// Check's input and in its access log entry.
const requestIDHeader = "x-request-id"

// maxReceiptWriters bounds the receipts written from Checks at once (an
// answer whose access log entry came first); beyond it a receipt is lost
// and counted, rather than a goroutine per request piling up.
const maxReceiptWriters = 64

// Bounds on what a receipt copies from Envoy's log.
const (
	maxDetailsLength = 128
	maxFlags         = 16
)

// accessLogServer is Envoy's gRPC access log service
// (envoy.service.accesslog.v3.AccessLogService), served beside ext_authz
// on the plugin's port: each finished request is matched with the answer
// the plugin gave it (delivery.go).
type accessLogServer struct {
	accesslogv3.UnimplementedAccessLogServiceServer
	p *Plugin
}

// StreamAccessLogs reads Envoy's stream until it closes; entries are
// judged as they arrive, and a mismatch is written to the decision log
// before the next message is read (Envoy buffers meanwhile).
func (s *accessLogServer) StreamAccessLogs(stream grpc.ClientStreamingServer[accesslogv3.StreamAccessLogsMessage, accesslogv3.StreamAccessLogsResponse]) error {
	ctx := context.WithoutCancel(stream.Context())
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&accesslogv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return err
		}
		for _, entry := range msg.GetHttpLogs().GetLogEntry() {
			if !finalEntry(entry) {
				continue
			}
			requestID, record := entry.GetRequest().GetRequestId(), recordOf(entry)
			if held := s.p.reservations.Load(); held != nil {
				held.finished(record.decisionID, requestID)
			}
			if r := s.p.deliveries.logged(requestID, record); r != nil {
				s.p.writeReceipt(ctx, r)
			}
		}
	}
}

// recordAnswer keeps what the plugin answered a request Envoy will log. A
// shed Check Envoy was presumed to have given up on is kept too, marked
// so: its leaf already says unanswered, and Envoy's log can only correct
// that (when Envoy applied the refusal after all).
func (p *Plugin) recordAnswer(req *authv3.CheckRequest, ev *evaluation, resp *authv3.CheckResponse) {
	a := answer{
		decisionID:   ev.decisionID,
		allowed:      resp.GetOkResponse() != nil,
		presumedLost: ev.refused != nil && shedUnanswered(ev.refused.shed),
	}
	if !a.allowed {
		a.status = int(resp.GetDeniedResponse().GetStatus().GetCode())
	}
	requestID := req.GetAttributes().GetRequest().GetHttp().GetHeaders()[requestIDHeader]
	if r := p.deliveries.answered(requestID, a); r != nil {
		select {
		case p.receiptWriters <- struct{}{}:
			go func() {
				defer func() { <-p.receiptWriters }()
				p.writeReceipt(context.Background(), r)
			}()
		default:
			p.metrics.deliveries.WithLabelValues(deliveryLost).Inc()
		}
	}
}

func shedUnanswered(reason string) bool {
	return reason == shedDeadline || reason == shedCancelled || reason == shedAbandoned
}

// writeReceipt logs the mismatch through OPA's decision log (to the
// durable log, with the enforcer's labels), as an event of its own that
// names the decision it is about.
func (p *Plugin) writeReceipt(ctx context.Context, r *pendingReceipt) {
	logger := logs.Lookup(p.manager)
	if logger == nil {
		return
	}
	txn, err := p.manager.Store.NewTransaction(ctx)
	if err != nil {
		p.receiptLost(r, err)
		return
	}
	defer p.manager.Store.Abort(ctx, txn)
	var result any = r.document()
	info := &server.Info{
		Txn:        txn,
		DecisionID: uuid.NewString(),
		Path:       ReceiptPath,
		Timestamp:  p.deliveries.now(),
		Results:    &result,
	}
	if err := logger.Log(ctx, info); err != nil {
		p.receiptLost(r, err)
	}
}

func (p *Plugin) receiptLost(r *pendingReceipt, err error) {
	p.metrics.deliveries.WithLabelValues(deliveryLost).Inc()
	p.manager.Logger().Error("%s: the receipt for decision %s (%s) could not be logged: %v", PluginName, r.answer.decisionID, r.reason, err)
}

// document is the receipt event's result, in the contract's shape
// (schemas/receipt/receipt.schema.json).
func (r *pendingReceipt) document() map[string]any {
	answered := map[string]any{"allowed": r.answer.allowed}
	// Only statuses the contract admits: a receipt the intake refuses
	// would set aside the decisions shipped beside it.
	if !r.answer.allowed && r.answer.status >= 200 && r.answer.status <= 599 {
		answered["http_status"] = json.Number(strconv.Itoa(r.answer.status))
	}
	flags := make([]any, 0, len(r.record.flags))
	for _, f := range r.record.flags {
		flags = append(flags, f)
	}
	return map[string]any{
		"decision_id": r.answer.decisionID,
		"delivered":   r.reason == receiptShedDelivered,
		"reason":      r.reason,
		"answered":    answered,
		"envoy": map[string]any{
			"response_code": json.Number(strconv.Itoa(r.record.responseCode)),
			"details":       r.record.details,
			"flags":         flags,
		},
	}
}

// recordOf is what an access log entry says Envoy did with the request.
func recordOf(entry *accesslogdatav3.HTTPAccessLogEntry) accessRecord {
	common := entry.GetCommonProperties()
	details := entry.GetResponse().GetResponseCodeDetails()
	if len(details) > maxDetailsLength {
		details = strings.ToValidUTF8(details[:maxDetailsLength], "")
	}
	code := int(entry.GetResponse().GetResponseCode().GetValue())
	if code > 599 {
		code = 0 // not an HTTP status the contract admits; details still say what Envoy did
	}
	r := accessRecord{
		responseCode: code,
		details:      details,
		flags:        flagsOf(common.GetResponseFlags()),
		upstream:     common.GetUpstreamRemoteAddress() != nil,
	}
	if ns := common.GetMetadata().GetFilterMetadata()[metadataNamespace]; ns != nil {
		r.decisionID = ns.GetFields()[decisionIDKey].GetStringValue()
	}
	return r
}

// metadataNamespace is the ext_authz filter's dynamic metadata namespace
// (the contract's EXT_AUTHZ_METADATA_NAMESPACE), where decisionIDKey is.
const metadataNamespace = "envoy.filters.http.ext_authz"

// flagsOf spells Envoy's response flags as %RESPONSE_FLAGS% does; only the
// ones that say why a client got no answer, or another one.
func flagsOf(f *accesslogdatav3.ResponseFlags) []string {
	if f == nil {
		return nil
	}
	named := []struct {
		set  bool
		name string
	}{
		{f.GetUnauthorizedDetails().GetReason() == accesslogdatav3.ResponseFlags_Unauthorized_EXTERNAL_SERVICE, "UAEX"},
		{f.GetDownstreamConnectionTermination(), "DC"},
		{f.GetDownstreamRemoteReset(), "DR"},
		{f.GetDownstreamProtocolError(), "DPE"},
		{f.GetLocalReset(), "LR"},
		{f.GetNoRouteFound(), "NR"},
		{f.GetRateLimited(), "RL"},
		{f.GetRateLimitServiceError(), "RLSE"},
		{f.GetStreamIdleTimeout(), "SI"},
		{f.GetDurationTimeout(), "DT"},
		{f.GetUpstreamRequestTimeout(), "UT"},
		{f.GetUpstreamConnectionFailure(), "UF"},
		{f.GetUpstreamRemoteReset(), "UR"},
		{f.GetNoHealthyUpstream(), "UH"},
		{f.GetOverloadManager(), "OM"},
	}
	var out []string
	for _, n := range named {
		if n.set && len(out) < maxFlags {
			out = append(out, n.name)
		}
	}
	return out
}

// finalEntry tells the entry Envoy writes when a request ends (its access log
// type, or no type from an Envoy that does not set one) from the periodic and
// start entries it may also stream.
func finalEntry(entry *accesslogdatav3.HTTPAccessLogEntry) bool {
	switch entry.GetCommonProperties().GetAccessLogType() {
	case accesslogdatav3.AccessLogType_NotSet, accesslogdatav3.AccessLogType_DownstreamEnd:
		return true
	default:
		return false
	}
}
