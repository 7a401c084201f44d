package extauthz

import (
	"container/list"
	"strings"
	"sync"
	"time"
)

// Delivery receipts: whether the answer the plugin sent is the answer
// Envoy gave the client. The plugin may answer in time by its own clock
// and still lose the race with Envoy's ext_authz timeout (the fsync of the
// decision log is on the path), or Envoy may answer the client something
// else. Envoy reports every finished request on its gRPC access log
// stream (receipts.go); the two sides meet here, by x-request-id, in a
// bounded table, and a mismatch becomes a receipt event in the decision
// log that marks the decision's leaf undelivered.

// Defaults, beside the table that reads them.
const (
	// defaultDeliveryEntries bounds the table: answers waiting for their
	// access log entry plus entries waiting for their answer. At 1,000
	// Checks/s an answer waits up to the request's duration plus Envoy's
	// flush interval (1 s); 100k entries is far beyond that and ~20 MB.
	defaultDeliveryEntries = 100_000
	// defaultDeliveryTTL is how long an answer waits for its access log
	// entry: longer than the longest request (a streamed completion) plus
	// the flush interval. An answer still waiting is counted unconfirmed.
	defaultDeliveryTTL = 10 * time.Minute
	// loggedFirstTTL is how long an access log entry waits for its answer:
	// the plugin records its answer only after the decision log committed,
	// and Envoy may have finished (and logged) the request meanwhile. Most
	// entries without an answer are requests ext_authz never saw (a path
	// refused by Envoy itself), so they are kept briefly.
	loggedFirstTTL = 5 * time.Second
)

// Undelivered reasons: the receipt's `reason`, the contract's
// RECEIPT_REASONS.
const (
	// receiptExtAuthzError: Envoy answered its ext_authz failure status
	// (the timeout fired, or the stream failed) instead of the decision.
	receiptExtAuthzError = "ext_authz_error"
	// receiptClientGone: Envoy answered the client nothing (the
	// downstream went away) and never sent the request upstream.
	receiptClientGone = "client_gone"
	// receiptOtherAnswer: Envoy answered the client something other than
	// the decision (a refusal for an allow, another status for a denial).
	receiptOtherAnswer = "other_answer"
	// receiptShedDelivered: the one receipt that says delivered. The
	// plugin shed a Check presuming Envoy had given up (the deadline had
	// passed on the plugin's clock), but Envoy applied the refusal: its own
	// timer, started a little earlier yet fired by a busy event loop, had
	// not run yet. Envoy's log is the fact; the shed leaf is the guess.
	receiptShedDelivered = "shed_answer_delivered"
)

// Results of matching an answer with Envoy's log, the result label of
// nexus_extauthz_deliveries_total.
const (
	deliveryDelivered   = "delivered"   // Envoy's answer is the decision's
	deliveryUndelivered = "undelivered" // it is not: a receipt is written
	deliveryUnconfirmed = "unconfirmed" // no access log entry came in time (or the table was full)
	deliveryAmbiguous   = "ambiguous"   // two requests shared an x-request-id: no receipt either way
	deliveryLost        = "receipt_lost"
	// deliveryCorrected: a shed answer logged as unanswered that Envoy did
	// apply; a receipt saying so is written.
	deliveryCorrected = "corrected"
)

// answer is what the plugin sent Envoy for one request.
type answer struct {
	decisionID string
	allowed    bool
	// status is the HTTP status of a denial (0 for an allow).
	status int
	// presumedLost: the decision log already says the client got no
	// answer (a shed Check Envoy was thought to have given up on), so
	// only Envoy applying it after all is worth a receipt.
	presumedLost bool
}

// accessRecord is what Envoy's access log says it did with a request.
type accessRecord struct {
	// responseCode is the status sent to the client; 0 when none was.
	responseCode int
	// details is Envoy's %RESPONSE_CODE_DETAILS% ("ext_authz_denied",
	// "ext_authz_error", "via_upstream", ...).
	details string
	// flags are Envoy's short response flags (UAEX, DC, UT, ...).
	flags []string
	// upstream: the request reached an upstream host.
	upstream bool
	// decisionID is the decision id Envoy took from the ext_authz answer's
	// dynamic metadata; "" when it applied no answer with one.
	decisionID string
}

// Envoy's response code details of the ext_authz filter.
const (
	detailsAuthzDenied = "ext_authz_denied"
	detailsAuthzError  = "ext_authz_error"
)

// undelivered says why the client did not get the answer as the plugin
// sent it, or "" when it did. An answer Envoy cannot have applied (its
// ext_authz failure, no response and no upstream) is undelivered even if
// the plugin had answered in time by its own clock.
func undelivered(a answer, r accessRecord) string {
	authzError := strings.HasPrefix(r.details, detailsAuthzError)
	switch {
	case authzError:
		return receiptExtAuthzError
	case r.decisionID != "" && r.decisionID == a.decisionID:
		return ""
	case r.responseCode == 0 && !r.upstream:
		return receiptClientGone
	case a.allowed && r.details == detailsAuthzDenied:
		return receiptOtherAnswer
	case !a.allowed && r.details != detailsAuthzDenied:
		return receiptOtherAnswer
	case !a.allowed && a.status != 0 && r.responseCode != a.status:
		return receiptOtherAnswer
	}
	return ""
}

// pendingReceipt is a mismatch to write to the decision log.
type pendingReceipt struct {
	answer answer
	record accessRecord
	reason string
}

// deliveryEntry is one request id's side that arrived first.
type deliveryEntry struct {
	requestID string
	answer    *answer
	record    *accessRecord
	collided  bool
	expires   time.Time
}

// deliveries is the bounded table keyed by x-request-id. Entries leave
// when their other side arrives, when they expire, or, oldest first, when
// the table is full; an answer that leaves without its log entry is
// counted unconfirmed. Answers and log entries are kept in two lists,
// each in arrival order with one lifetime, so both expire from the front.
type deliveries struct {
	max   int
	ttl   time.Duration
	now   func() time.Time
	count func(result string)

	mu      sync.Mutex
	answers *list.List // of *deliveryEntry waiting for their log entry, oldest first
	records *list.List // of *deliveryEntry waiting for their answer, oldest first
	byID    map[string]*list.Element
}

func newDeliveries(max int, ttl time.Duration, count func(string)) *deliveries {
	if count == nil {
		count = func(string) {}
	}
	return &deliveries{
		max: max, ttl: ttl, now: time.Now, count: count,
		answers: list.New(), records: list.New(), byID: map[string]*list.Element{},
	}
}

// answered records the plugin's answer to request requestID; if Envoy's
// log entry is already there, it is judged at once.
func (d *deliveries) answered(requestID string, a answer) *pendingReceipt {
	return d.arrive(&deliveryEntry{requestID: requestID, answer: &a}, d.answers, d.ttl)
}

// logged records Envoy's access log entry for request requestID; if the
// plugin's answer is there, it is judged.
func (d *deliveries) logged(requestID string, r accessRecord) *pendingReceipt {
	return d.arrive(&deliveryEntry{requestID: requestID, record: &r}, d.records, loggedFirstTTL)
}

// arrive pairs one side of a request (the answer or Envoy's log entry) with
// the other if it is waiting, else keeps it in its list for ttl. A second
// arrival of the same side means the request id was reused (a client chose
// it and Envoy kept it): neither side can then be matched.
func (d *deliveries) arrive(side *deliveryEntry, waiting *list.List, ttl time.Duration) *pendingReceipt {
	if side.requestID == "" {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	d.expire(now)
	el, ok := d.byID[side.requestID]
	if !ok {
		side.expires = now.Add(ttl)
		d.insert(waiting, side)
		return nil
	}
	e := el.Value.(*deliveryEntry)
	if (side.answer != nil && e.record == nil) || (side.record != nil && e.answer == nil) {
		e.collided = true
		return nil
	}
	d.remove(el)
	if e.collided {
		d.count(deliveryAmbiguous)
		return nil
	}
	if side.answer != nil {
		return d.judge(*side.answer, *e.record)
	}
	return d.judge(*e.answer, *side.record)
}

func (d *deliveries) judge(a answer, r accessRecord) *pendingReceipt {
	reason := undelivered(a, r)
	if a.presumedLost {
		if reason != "" {
			d.count(deliveryUndelivered) // as its leaf says: no receipt
			return nil
		}
		d.count(deliveryCorrected)
		return &pendingReceipt{answer: a, record: r, reason: receiptShedDelivered}
	}
	if reason == "" {
		d.count(deliveryDelivered)
		return nil
	}
	d.count(deliveryUndelivered)
	return &pendingReceipt{answer: a, record: r, reason: reason}
}

// len is the number of entries held.
func (d *deliveries) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.byID)
}

// insert adds e to l, making room first: log entries go before answers,
// as they are the cheaper loss (most never get an answer).
func (d *deliveries) insert(l *list.List, e *deliveryEntry) {
	for len(d.byID) >= d.max {
		if front := d.records.Front(); front != nil {
			d.evict(front)
		} else {
			d.evict(d.answers.Front())
		}
	}
	d.byID[e.requestID] = l.PushBack(e)
}

func (d *deliveries) expire(now time.Time) {
	for _, l := range []*list.List{d.answers, d.records} {
		for el := l.Front(); el != nil && now.After(el.Value.(*deliveryEntry).expires); el = l.Front() {
			d.evict(el)
		}
	}
}

func (d *deliveries) evict(el *list.Element) {
	e := el.Value.(*deliveryEntry)
	if e.answer != nil && !e.collided {
		d.count(deliveryUnconfirmed)
	}
	d.remove(el)
}

func (d *deliveries) remove(el *list.Element) {
	e := el.Value.(*deliveryEntry)
	delete(d.byID, e.requestID)
	if e.answer != nil {
		d.answers.Remove(el)
	} else {
		d.records.Remove(el)
	}
}
