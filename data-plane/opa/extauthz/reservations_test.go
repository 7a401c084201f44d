package extauthz

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

// clock is a settable time for the reservation table.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func testReservations(t *testing.T, cfg *ReservationConfig) (*reservations, *clock) {
	t.Helper()
	s, err := cfg.resolve()
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)}
	r := newReservations(s)
	r.now = c.now
	return r, c
}

const tenantScope = `tenant "acme"`

// claimAt is a claim of worst on the tenant's scope, with left as
// published at asOf.
func claimAt(asOf time.Time, worst, left int64) claim {
	return claim{asOf: asOf.UnixMilli(), worstCase: worst, scopes: []scopeLeft{{scope: tenantScope, left: left}}}
}

func TestReservationsHoldUntilTheStateCountsTheRequest(t *testing.T) {
	r, c := testReservations(t, nil)
	published := c.now()
	for i := range 10 {
		if refused := r.reserve(fmt.Sprint("d", i), fmt.Sprint("r", i), claimAt(published, 100, 1000)); refused != nil {
			t.Fatalf("hold %d of 10 that fit: refused %+v", i, refused)
		}
	}
	refused := r.reserve("d10", "r10", claimAt(published, 100, 1000))
	if refused == nil || refused.why != overRemaining || refused.held != 1000 || refused.scope != tenantScope {
		t.Fatalf("the 11th worst case beyond what was left: %+v", refused)
	}
	// Request 0 ends; a state read within the grace after the end does
	// not release it, one read after does.
	r.finished("d0", "r0")
	ended := c.now()
	c.advance(time.Second)
	if refused := r.reserve("d11", "r11", claimAt(ended.Add(time.Second), 100, 1000)); refused == nil {
		t.Fatal("a state read within the grace released the hold")
	}
	c.advance(2 * time.Second)
	if refused := r.reserve("d12", "r12", claimAt(ended.Add(2100*time.Millisecond), 100, 1000)); refused != nil {
		t.Fatalf("a state read after the end plus the grace: %+v", refused)
	}
	if got := r.heldIn(tenantScope); got != 1000 {
		t.Fatalf("held %d, want 1000 (nine open holds and the new one)", got)
	}
}

func TestReservationsReleaseOnlyEndedRequests(t *testing.T) {
	cases := []struct {
		name     string
		finished bool
		later    time.Duration
		released bool
	}{
		{"not ended, however new the state", false, time.Hour, false},
		{"ended, state read before the grace passed", true, 1900 * time.Millisecond, false},
		{"ended, state read after the grace", true, 2100 * time.Millisecond, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, c := testReservations(t, &ReservationConfig{TTLSeconds: ptr(7200)})
			if refused := r.reserve("d", "r", claimAt(c.now(), 500, 500)); refused != nil {
				t.Fatal(refused)
			}
			if tc.finished {
				r.finished("d", "r")
			}
			asOf := c.now().Add(tc.later)
			c.advance(tc.later)
			refused := r.reserve("e", "s", claimAt(asOf, 1, 500))
			if released := refused == nil; released != tc.released {
				t.Fatalf("released %v, want %v (%+v)", released, tc.released, refused)
			}
		})
	}
}

func TestReservationsExpireAfterTheirTTL(t *testing.T) {
	r, c := testReservations(t, &ReservationConfig{TTLSeconds: ptr(60)})
	published := c.now()
	if refused := r.reserve("d", "r", claimAt(published, 500, 500)); refused != nil {
		t.Fatal(refused)
	}
	c.advance(59 * time.Second)
	if refused := r.reserve("e", "s", claimAt(published, 1, 500)); refused == nil {
		t.Fatal("a hold left before its TTL")
	}
	c.advance(2 * time.Second)
	if refused := r.reserve("e", "s", claimAt(published, 500, 500)); refused != nil {
		t.Fatalf("a hold past its TTL still counts: %+v", refused)
	}
	if r.len() != 1 {
		t.Fatalf("%d holds, want 1", r.len())
	}
}

func TestReservationsRefuseNewHoldsWhenFullRatherThanDropOld(t *testing.T) {
	r, c := testReservations(t, &ReservationConfig{MaxEntries: ptr(3)})
	for i := range 3 {
		if refused := r.reserve(fmt.Sprint("d", i), "", claimAt(c.now(), 1, 1000)); refused != nil {
			t.Fatal(refused)
		}
	}
	refused := r.reserve("d3", "", claimAt(c.now(), 1, 1000))
	if refused == nil || refused.why != tableFull {
		t.Fatalf("a fourth hold in a table of three: %+v", refused)
	}
	if r.len() != 3 || r.heldIn(tenantScope) != 3 {
		t.Fatalf("%d holds, %d held: the old ones must stay", r.len(), r.heldIn(tenantScope))
	}
}

func TestAReusedDecisionIDNeverReleasesAnothersHold(t *testing.T) {
	r, c := testReservations(t, nil)
	if refused := r.reserve("d", "r", claimAt(c.now(), 400, 1000)); refused != nil {
		t.Fatal(refused)
	}
	// The same decision id again: refused, and the first hold stands.
	if refused := r.reserve("d", "other", claimAt(c.now(), 1, 1000)); refused == nil || refused.why != reusedID {
		t.Fatalf("a second hold under one decision id: %+v", refused)
	}
	// An access log entry of another request naming that decision id
	// does not end it.
	r.finished("d", "other")
	c.advance(10 * time.Second)
	if refused := r.reserve("e", "s", claimAt(c.now(), 601, 1000)); refused == nil {
		t.Fatal("another request's log entry released the hold")
	}
	// Its own entry does, once; a second entry changes nothing.
	r.finished("d", "r")
	ended := c.now()
	c.advance(time.Second)
	r.finished("d", "r")
	c.advance(2 * time.Second)
	if refused := r.reserve("e", "s", claimAt(ended.Add(2500*time.Millisecond), 1000, 1000)); refused != nil {
		t.Fatalf("the hold's own end, then a newer state: %+v", refused)
	}
	if r.len() != 1 {
		t.Fatalf("%d holds, want 1", r.len())
	}
}

func TestReservationsKeepScopesApart(t *testing.T) {
	r, c := testReservations(t, nil)
	model := claim{asOf: c.now().UnixMilli(), worstCase: 300, scopes: []scopeLeft{
		{scope: tenantScope, left: 10_000}, {scope: tenantScope + ` model "gpt-4o"`, left: 500},
	}}
	if refused := r.reserve("d1", "r1", model); refused != nil {
		t.Fatal(refused)
	}
	refused := r.reserve("d2", "r2", model)
	if refused == nil || refused.scope != tenantScope+` model "gpt-4o"` {
		t.Fatalf("the model's cap is the strictest: %+v", refused)
	}
	other := claim{asOf: c.now().UnixMilli(), worstCase: 300, scopes: []scopeLeft{{scope: `tenant "globex"`, left: 300}}}
	if refused := r.reserve("d3", "r3", other); refused != nil {
		t.Fatalf("another tenant's scope is not acme's: %+v", refused)
	}
}

func TestAClaimEvaluatedAgainstAnOlderStateIsRefused(t *testing.T) {
	r, c := testReservations(t, nil)
	old := c.now()
	c.advance(5 * time.Second)
	if refused := r.reserve("d1", "r1", claimAt(c.now(), 1, 1000)); refused != nil {
		t.Fatal(refused)
	}
	if refused := r.reserve("d2", "r2", claimAt(old, 1, 1000)); refused == nil || refused.why != staleState {
		t.Fatalf("a figure older than one already seen: %+v", refused)
	}
}

func TestAStateFromAClockThatWentBackIsFollowed(t *testing.T) {
	r, c := testReservations(t, nil)
	future := c.now().Add(time.Hour)
	if refused := r.reserve("d1", "r1", claimAt(future, 1, 1000)); refused != nil {
		t.Fatal(refused)
	}
	// The control plane's clock is put right: its states are an hour
	// older than the one seen, which is no race with an activation.
	if refused := r.reserve("d2", "r2", claimAt(c.now(), 1, 1000)); refused != nil {
		t.Fatalf("every chat refused until the clock catches up: %+v", refused)
	}
	if got := r.heldIn(tenantScope); got != 2 {
		t.Fatalf("held %d, want 2: following the clock releases nothing", got)
	}
}

func TestCancelledHoldsAreDropped(t *testing.T) {
	r, c := testReservations(t, nil)
	if refused := r.reserve("d", "r", claimAt(c.now(), 1000, 1000)); refused != nil {
		t.Fatal(refused)
	}
	r.cancel("d")
	if r.len() != 0 || r.heldIn(tenantScope) != 0 {
		t.Fatalf("%d holds, %d held after cancel", r.len(), r.heldIn(tenantScope))
	}
}

// Run with -race (scripts/test-go does): concurrent holds never admit
// more than what was left, and every hold and end is accounted for.
func TestConcurrentReservationsNeverOverbook(t *testing.T) {
	r, c := testReservations(t, nil)
	published := c.now()
	const clients, worst, left = 64, 7, 7 * 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				id := fmt.Sprintf("d%d-%d", i, j)
				if r.reserve(id, id, claimAt(published, worst, left)) == nil {
					mu.Lock()
					admitted++
					mu.Unlock()
					r.finished(id, id)
				}
			}
		}()
	}
	wg.Wait()
	if admitted != left/worst {
		t.Fatalf("admitted %d, want exactly %d", admitted, left/worst)
	}
	if got := r.heldIn(tenantScope); got != left {
		t.Fatalf("held %d, want %d", got, left)
	}
}

func TestParseClaim(t *testing.T) {
	cases := []struct {
		name, decision string
		ok             bool
		err            bool
	}{
		{"no reservation", `{"allowed": true}`, false, false},
		{"a boolean decision", `true`, false, false},
		{"whole", `{"allowed": true, "reservation": {"as_of": 1795000000000, "worst_case": 1075, "scopes": {"tenant \"acme\"": 5000}}}`, true, false},
		{"a negative left is a figure", `{"reservation": {"as_of": 1, "worst_case": 1, "scopes": {"t": -5}}}`, true, false},
		{"not an object", `{"reservation": 3}`, false, true},
		{"a fractional worst case", `{"reservation": {"as_of": 1, "worst_case": 1.5, "scopes": {"t": 5}}}`, false, true},
		{"a negative worst case", `{"reservation": {"as_of": 1, "worst_case": -1, "scopes": {"t": 5}}}`, false, true},
		{"no scopes", `{"reservation": {"as_of": 1, "worst_case": 1, "scopes": {}}}`, false, true},
		{"a string as_of", `{"reservation": {"as_of": "now", "worst_case": 1, "scopes": {"t": 5}}}`, false, true},
		{"past 64 bits", `{"reservation": {"as_of": 1, "worst_case": 1e30, "scopes": {"t": 5}}}`, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, ok, err := parseClaim(jsonValue(t, tc.decision))
			if ok != tc.ok || (err != nil) != tc.err {
				t.Fatalf("ok %v err %v, want ok %v err %v", ok, err, tc.ok, tc.err)
			}
		})
	}
}

func TestReservationConfig(t *testing.T) {
	cases := []struct {
		raw     string
		enabled bool
		err     bool
	}{
		{`{}`, true, false},
		{`{"enabled": false}`, false, false},
		{`{"grace-seconds": -1}`, true, true},
		{`{"ttl-seconds": 0}`, true, true},
		{`{"ttl-seconds": 2, "grace-seconds": 2}`, true, true},
		{`{"max-entries": 0}`, true, true},
		{`{"retry-after-seconds": -1}`, true, true},
	}
	for _, tc := range cases {
		var c ReservationConfig
		if err := json.Unmarshal([]byte(tc.raw), &c); err != nil {
			t.Fatal(err)
		}
		s, err := c.resolve()
		if (err != nil) != tc.err || (err == nil && s.enabled != tc.enabled) {
			t.Errorf("%s: enabled %v err %v", tc.raw, s.enabled, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }
