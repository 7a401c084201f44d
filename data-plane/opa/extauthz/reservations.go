package extauthz

import (
	"container/list"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Budget reservations: the policy refuses a chat whose worst-case cost
// exceeds what a budget has left as the state bundle last published it,
// but between two state bundles every request is checked against the same
// figure, so a burst could spend it many times over. For each allowed
// priced chat the decision names a `reservation` (nexus.cost.reservation):
// its worst case, the budget scopes it draws on with what each had left as
// published, and `as_of`, when the control plane read the spend behind
// those figures. The plugin holds the worst case against every scope and
// refuses a request whose worst case plus what is already held in a scope
// exceeds what that scope had left. A hold ends once Envoy's access log
// says the request finished (receipts.go) and a state bundle read more than
// the grace after that is evaluated: its figure then includes the
// request's real spend. What a burst can admit beyond a cap is then bounded
// by the requests in flight (and in the grace) times their worst case.
//
// The table is bounded: a hold whose end never comes (no access log
// entry) leaves after the TTL, and when it is full new holds are refused
// rather than old ones dropped, since dropping one would void the bound.

// Reservation defaults, beside the table that reads them.
const (
	// defaultReservationGrace covers the gateway's usage report reaching
	// the control plane after the request ended, and the clocks of the
	// enforcer (the end) and the control plane (as_of) disagreeing.
	defaultReservationGrace = 2 * time.Second
	// defaultReservationTTL: longer than the longest request (a streamed
	// completion) plus the access log's flush interval, as the delivery
	// table's.
	defaultReservationTTL = 10 * time.Minute
	// defaultReservationEntries bounds the holds: one per priced chat in
	// flight or in its grace; at 1,000 chats/s and 3 s each, 3,000.
	defaultReservationEntries = 100_000
	// defaultReservationRetryAfter is the refusal's retry-after: about one
	// state bundle's lag plus the grace.
	defaultReservationRetryAfter = 3
	// staleStateWindow: a decision evaluated against a state at most this
	// much older than the newest seen raced a state bundle's activation and
	// is refused; one older still means the control plane's clock went back
	// (or an older state was restored), and the table follows it rather than
	// refuse every chat until the clock catches up.
	staleStateWindow = time.Minute
)

// ReservationConfig turns budget reservations on or off and bounds them.
// They are on by default.
type ReservationConfig struct {
	Enabled           *bool `json:"enabled"`
	GraceSeconds      *int  `json:"grace-seconds"`
	TTLSeconds        *int  `json:"ttl-seconds"`
	MaxEntries        *int  `json:"max-entries"`
	RetryAfterSeconds *int  `json:"retry-after-seconds"`
}

// reservationSettings is ReservationConfig validated, defaults filled in.
type reservationSettings struct {
	enabled    bool
	grace      time.Duration
	ttl        time.Duration
	maxEntries int
	retryAfter int
}

func (c *ReservationConfig) resolve() (reservationSettings, error) {
	s := reservationSettings{
		enabled: true, grace: defaultReservationGrace, ttl: defaultReservationTTL,
		maxEntries: defaultReservationEntries, retryAfter: defaultReservationRetryAfter,
	}
	if c == nil {
		return s, nil
	}
	if c.Enabled != nil {
		s.enabled = *c.Enabled
	}
	if c.GraceSeconds != nil {
		if *c.GraceSeconds < 0 {
			return s, errors.New("reservations.grace-seconds must not be negative")
		}
		s.grace = time.Duration(*c.GraceSeconds) * time.Second
	}
	if c.TTLSeconds != nil {
		if *c.TTLSeconds <= 0 {
			return s, errors.New("reservations.ttl-seconds must be positive")
		}
		s.ttl = time.Duration(*c.TTLSeconds) * time.Second
	}
	if c.MaxEntries != nil {
		if *c.MaxEntries <= 0 {
			return s, errors.New("reservations.max-entries must be positive")
		}
		s.maxEntries = *c.MaxEntries
	}
	if c.RetryAfterSeconds != nil {
		if *c.RetryAfterSeconds < 0 {
			return s, errors.New("reservations.retry-after-seconds must not be negative")
		}
		s.retryAfter = *c.RetryAfterSeconds
	}
	if s.ttl <= s.grace {
		return s, fmt.Errorf("reservations.ttl-seconds (%s) must exceed grace-seconds (%s)", s.ttl, s.grace)
	}
	return s, nil
}

// claim is what one decision asks to hold: decision.reservation.
type claim struct {
	asOf      int64 // Unix milliseconds when the published figures were read
	worstCase int64 // micro-USD
	scopes    []scopeLeft
}

type scopeLeft struct {
	scope string
	left  int64 // micro-USD the scope had left as published
}

// parseClaim reads decision.reservation; ok is false when the decision
// names none (not a priced chat, or a state without as_of).
func parseClaim(result any) (c claim, ok bool, err error) {
	d, isObject := result.(map[string]any)
	if !isObject {
		return c, false, nil
	}
	raw, present := d["reservation"]
	if !present {
		return c, false, nil
	}
	obj, isObject := raw.(map[string]any)
	if !isObject {
		return c, false, resultError("decision.reservation must be an object, not " + jsonType(raw))
	}
	if c.asOf, err = integer("decision.reservation.as_of", obj["as_of"]); err != nil {
		return c, false, err
	}
	if c.worstCase, err = integer("decision.reservation.worst_case", obj["worst_case"]); err != nil {
		return c, false, err
	}
	if c.worstCase < 0 {
		return c, false, resultError("decision.reservation.worst_case must not be negative")
	}
	scopes, isObject := obj["scopes"].(map[string]any)
	if !isObject || len(scopes) == 0 {
		return c, false, resultError("decision.reservation.scopes must be a non-empty object")
	}
	c.scopes = make([]scopeLeft, 0, len(scopes))
	for scope, v := range scopes {
		left, err := integer("decision.reservation.scopes["+scope+"]", v)
		if err != nil {
			return c, false, err
		}
		c.scopes = append(c.scopes, scopeLeft{scope: scope, left: left})
	}
	return c, true, nil
}

func integer(field string, v any) (int64, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, resultError(field + " must be a number, not " + jsonType(v))
	}
	i, err := n.Int64()
	if err != nil {
		return 0, resultError(field + " must be an integer within 64 bits, not " + n.String())
	}
	return i, nil
}

// hold is one admitted request's reservation.
type hold struct {
	decisionID string
	requestID  string
	amount     int64
	scopes     []string
	expires    time.Time
	ended      time.Time // zero until Envoy logged the request's end
	el         *list.Element
}

// Why a claim is refused.
const (
	overRemaining = "exceeds_remaining" // worst case + held > what the scope had left
	staleState    = "stale_state"       // evaluated against a state older than one already seen
	tableFull     = "table_full"        // max-entries holds are in
	reusedID      = "reused_id"         // a hold with this decision id exists
)

// refusedClaim says why a claim was refused, for the refusal's message.
type refusedClaim struct {
	why       string
	scope     string
	held      int64
	left      int64
	worstCase int64
}

// reservations is the table of holds. Open holds (the request has not
// ended) are in one list in arrival order, which with one TTL is expiry
// order; ended holds in another in end order, so both the TTL and a newer
// as_of release from the front.
type reservations struct {
	cfg reservationSettings
	now func() time.Time
	// gauge is told how many holds are kept after each change.
	gauge func(float64)

	mu      sync.Mutex
	byID    map[string]*hold
	open    *list.List // of *hold, oldest first
	ended   *list.List // of *hold, earliest end first
	held    map[string]int64
	horizon int64 // the newest as_of seen, Unix milliseconds
}

func newReservations(cfg reservationSettings) *reservations {
	return &reservations{
		cfg: cfg, now: time.Now, gauge: func(float64) {},
		byID: map[string]*hold{}, open: list.New(), ended: list.New(), held: map[string]int64{},
	}
}

// reserve holds c's worst case in each of its scopes for decision
// decisionID (request requestID), or says why it may not.
func (r *reservations) reserve(decisionID, requestID string, c claim) *refusedClaim {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer func() { r.gauge(float64(len(r.byID))) }()
	now := r.now()
	r.expire(now)
	if c.asOf > r.horizon {
		r.horizon = c.asOf
		r.releaseEnded()
	}
	switch {
	case c.asOf < r.horizon-staleStateWindow.Milliseconds():
		r.horizon = c.asOf
	case c.asOf < r.horizon:
		// Holds released against a newer state are not in this figure.
		return &refusedClaim{why: staleState, worstCase: c.worstCase}
	}
	if _, dup := r.byID[decisionID]; dup || decisionID == "" {
		return &refusedClaim{why: reusedID, worstCase: c.worstCase}
	}
	for _, s := range c.scopes {
		if held := r.held[s.scope]; c.worstCase > s.left-held {
			return &refusedClaim{why: overRemaining, scope: s.scope, held: held, left: s.left, worstCase: c.worstCase}
		}
	}
	if len(r.byID) >= r.cfg.maxEntries {
		return &refusedClaim{why: tableFull, worstCase: c.worstCase}
	}
	h := &hold{decisionID: decisionID, requestID: requestID, amount: c.worstCase, expires: now.Add(r.cfg.ttl)}
	h.scopes = make([]string, len(c.scopes))
	for i, s := range c.scopes {
		h.scopes[i] = s.scope
		r.held[s.scope] += c.worstCase
	}
	h.el = r.open.PushBack(h)
	r.byID[decisionID] = h
	return nil
}

// cancel drops decisionID's hold at once: its answer was never sent (the
// decision log refused it), so no spend follows.
func (r *reservations) cancel(decisionID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h := r.byID[decisionID]; h != nil {
		r.drop(h)
		r.gauge(float64(len(r.byID)))
	}
}

// finished marks the end of decisionID's request, as Envoy's access log
// entry for request requestID says. Only the entry of the request that was
// held ends it: the same decision id on another request's entry, or a
// second entry, changes nothing.
func (r *reservations) finished(decisionID, requestID string) {
	if decisionID == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.byID[decisionID]
	if h == nil || h.requestID != requestID || !h.ended.IsZero() {
		return
	}
	r.open.Remove(h.el)
	h.ended = r.now()
	h.el = r.ended.PushBack(h)
}

// releaseEnded drops the holds whose request ended more than the grace
// before the horizon: the state read then counts their spend.
func (r *reservations) releaseEnded() {
	for el := r.ended.Front(); el != nil; el = r.ended.Front() {
		h := el.Value.(*hold)
		if h.ended.Add(r.cfg.grace).UnixMilli() >= r.horizon {
			return
		}
		r.drop(h)
	}
}

// expire drops holds past their TTL: open ones from the front; ended ones
// from the front too (end order is close to arrival order, and newer
// state releases them long before).
func (r *reservations) expire(now time.Time) {
	for _, l := range []*list.List{r.open, r.ended} {
		for el := l.Front(); el != nil && now.After(el.Value.(*hold).expires); el = l.Front() {
			r.drop(el.Value.(*hold))
		}
	}
}

func (r *reservations) drop(h *hold) {
	if h.ended.IsZero() {
		r.open.Remove(h.el)
	} else {
		r.ended.Remove(h.el)
	}
	delete(r.byID, h.decisionID)
	for _, s := range h.scopes {
		if r.held[s] -= h.amount; r.held[s] <= 0 {
			delete(r.held, s)
		}
	}
}

// len is the number of holds.
func (r *reservations) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// heldIn is what is held in scope.
func (r *reservations) heldIn(scope string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.held[scope]
}
