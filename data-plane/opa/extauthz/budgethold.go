package extauthz

import (
	"fmt"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// ruleReservation is the reason rule of a request refused because its
// worst case does not fit beside what requests in flight hold
// (reservations.go).
const ruleReservation = "nexus.cost.reservation_exceeds_remaining"

// costControls are the controls of the policy's cost refusals
// (rego/nexus/cost.rego): capacity is managed, and so is spend.
var costControls = []string{"SOC2:A1.1", "ISO27001:A.8.6", "ISO42001:A.4.5"}

// holdBudget holds the worst case of an allowed priced chat against the
// budgets it draws on (ev.held is then true), or refuses it. A decision
// without a reservation (not a priced chat, or reservations off) holds
// nothing; a malformed one is the policy's defect, a result error.
func (p *Plugin) holdBudget(req *authv3.CheckRequest, ev *evaluation) (*refusal, error) {
	r := p.reservations.Load()
	if r == nil || !policyAllowed(ev.result) {
		return nil, nil
	}
	c, ok, err := parseClaim(ev.result)
	if err != nil || !ok {
		return nil, err
	}
	requestID := req.GetAttributes().GetRequest().GetHttp().GetHeaders()[requestIDHeader]
	refused := r.reserve(ev.decisionID, requestID, c)
	if refused == nil {
		ev.held = true
		return nil, nil
	}
	return reservationRefusal(refused, r.cfg.retryAfter), nil
}

func policyAllowed(result any) bool {
	d, ok := result.(map[string]any)
	return ok && d["allowed"] == true
}

func reservationRefusal(c *refusedClaim, retryAfter int) *refusal {
	var message string
	switch c.why {
	case overRemaining:
		message = fmt.Sprintf(
			"the worst-case cost of this request (%s) and what requests in flight already hold in the budget of %s (%s) exceed what it had left as last published (%s)",
			microUSD(c.worstCase), c.scope, microUSD(c.held), microUSD(c.left))
	case staleState:
		message = "the budget state changed while this request was evaluated: it is decided again when retried"
	case tableFull:
		message = "the enforcer holds as many budget reservations as it may: retry once requests in flight finish"
	default:
		message = "a budget reservation is already held under this decision id"
	}
	detail := map[string]any{"refused": c.why, "worst_case": c.worstCase}
	if c.why == overRemaining {
		detail["scope"], detail["held"], detail["left"] = c.scope, c.held, c.left
	}
	r := &refusal{status: 429, rule: ruleReservation, message: message, controls: costControls, reservation: detail}
	if retryAfter > 0 {
		r.headers = []*corev3.HeaderValueOption{
			headerOption("retry-after", strconv.Itoa(retryAfter), corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		}
	}
	return r
}

// microUSD spells an amount as the policy's messages do.
func microUSD(micro int64) string {
	return fmt.Sprintf("$%.6f", float64(micro)/1e6)
}
