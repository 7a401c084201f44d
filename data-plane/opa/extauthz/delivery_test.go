package extauthz

import (
	"fmt"
	"testing"
	"time"
)

// countedDeliveries is a table with a hand-moved clock and its results
// counted by label.
func countedDeliveries(max int, ttl time.Duration) (*deliveries, map[string]int, *time.Time) {
	counts := map[string]int{}
	clock := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	d := newDeliveries(max, ttl, func(result string) { counts[result]++ })
	d.now = func() time.Time { return clock }
	return d, counts, &clock
}

var (
	allowAnswer = answer{decisionID: "d-allow", allowed: true}
	denyAnswer  = answer{decisionID: "d-deny", status: 403}
	upstream200 = accessRecord{responseCode: 200, details: "via_upstream", upstream: true, decisionID: "d-allow"}
	denied403   = accessRecord{responseCode: 403, details: detailsAuthzDenied, flags: []string{"UAEX"}}
	authzError  = accessRecord{responseCode: 503, details: detailsAuthzError, flags: []string{"UAEX"}}
)

func TestAnAnswerEnvoyGaveTheClientIsDelivered(t *testing.T) {
	for name, tc := range map[string]struct {
		a answer
		r accessRecord
	}{
		"an allow forwarded upstream":               {allowAnswer, upstream200},
		"an allow the upstream failed":              {allowAnswer, accessRecord{responseCode: 502, details: "via_upstream", upstream: true, flags: []string{"UR"}}},
		"an allow another filter then rate limited": {allowAnswer, accessRecord{responseCode: 429, details: "request_rate_limited", flags: []string{"RL"}, decisionID: "d-allow"}},
		"a denial answered with its status":         {denyAnswer, denied403},
		"a denial Envoy tagged with its decision":   {denyAnswer, accessRecord{responseCode: 403, details: detailsAuthzDenied, decisionID: "d-deny"}},
	} {
		t.Run(name, func(t *testing.T) {
			if reason := undelivered(tc.a, tc.r); reason != "" {
				t.Fatalf("undelivered (%s), want delivered", reason)
			}
		})
	}
}

func TestAnAnswerEnvoyDidNotGiveTheClientIsUndelivered(t *testing.T) {
	for name, tc := range map[string]struct {
		a    answer
		r    accessRecord
		want string
	}{
		"an allow that missed Envoy's timeout":      {allowAnswer, authzError, receiptExtAuthzError},
		"a denial that missed Envoy's timeout":      {denyAnswer, authzError, receiptExtAuthzError},
		"an allow for a client gone before the end": {allowAnswer, accessRecord{responseCode: 0, details: "downstream_remote_disconnect", flags: []string{"DC"}}, receiptClientGone},
		"an allow Envoy refused":                    {allowAnswer, denied403, receiptOtherAnswer},
		"a denial Envoy forwarded":                  {denyAnswer, upstream200, receiptOtherAnswer},
		"a denial answered with another status":     {denyAnswer, accessRecord{responseCode: 429, details: detailsAuthzDenied}, receiptOtherAnswer},
	} {
		t.Run(name, func(t *testing.T) {
			if reason := undelivered(tc.a, tc.r); reason != tc.want {
				t.Fatalf("reason %q, want %q", reason, tc.want)
			}
		})
	}
}

func TestTheTwoSidesMeetWhicheverComesFirst(t *testing.T) {
	d, counts, _ := countedDeliveries(10, time.Minute)

	if r := d.answered("req-1", allowAnswer); r != nil {
		t.Fatal("a receipt before Envoy's log")
	}
	r := d.logged("req-1", authzError)
	if r == nil || r.reason != receiptExtAuthzError || r.answer.decisionID != "d-allow" {
		t.Fatalf("answer first: receipt %+v", r)
	}

	// Envoy finished (and logged) while the decision log was committing.
	if r := d.logged("req-2", authzError); r != nil {
		t.Fatal("a receipt before the answer")
	}
	r = d.answered("req-2", denyAnswer)
	if r == nil || r.answer.decisionID != "d-deny" {
		t.Fatalf("log first: receipt %+v", r)
	}

	if d.answered("req-3", allowAnswer) != nil || d.logged("req-3", upstream200) != nil {
		t.Fatal("a receipt for a delivered answer")
	}
	if counts[deliveryUndelivered] != 2 || counts[deliveryDelivered] != 1 {
		t.Fatalf("counts %v", counts)
	}
	if d.len() != 0 {
		t.Fatalf("%d entries left after every request met its log", d.len())
	}
}

func TestAReusedRequestIDMatchesNothing(t *testing.T) {
	d, counts, _ := countedDeliveries(10, time.Minute)
	// A client chose x-request-id and sent two requests with it at once.
	d.answered("mine", allowAnswer)
	d.answered("mine", answer{decisionID: "d-other", allowed: true})
	if r := d.logged("mine", authzError); r != nil {
		t.Fatalf("a receipt for a request id two answers share: %+v", r)
	}
	if counts[deliveryAmbiguous] != 1 {
		t.Fatalf("counts %v", counts)
	}

	d.logged("twice", authzError)
	d.logged("twice", authzError)
	if r := d.answered("twice", allowAnswer); r != nil {
		t.Fatalf("a receipt for a request id two log entries share: %+v", r)
	}
	if counts[deliveryAmbiguous] != 2 || counts[deliveryUndelivered] != 0 {
		t.Fatalf("counts %v", counts)
	}
}

func TestTheTableIsBoundedAndForgetsOldestFirst(t *testing.T) {
	d, counts, _ := countedDeliveries(100, time.Minute)
	for i := range 250 {
		d.answered(fmt.Sprintf("req-%d", i), answer{decisionID: fmt.Sprintf("d-%d", i), allowed: true})
	}
	if d.len() != 100 {
		t.Fatalf("%d entries, want the cap of 100", d.len())
	}
	if counts[deliveryUnconfirmed] != 150 {
		t.Fatalf("%d unconfirmed, want the 150 pushed out", counts[deliveryUnconfirmed])
	}
	if r := d.logged("req-0", authzError); r != nil {
		t.Fatal("the oldest answer was kept past the cap")
	}
	if r := d.logged("req-249", authzError); r == nil {
		t.Fatal("the newest answer was not kept")
	}

	// Log entries without an answer make room before answers do.
	d, counts, clock := countedDeliveries(3, time.Minute)
	d.answered("a", allowAnswer)
	d.logged("x", upstream200)
	d.logged("y", upstream200)
	d.logged("z", upstream200)
	if d.len() != 3 || counts[deliveryUnconfirmed] != 0 {
		t.Fatalf("len %d, counts %v", d.len(), counts)
	}
	if r := d.logged("a", authzError); r == nil {
		t.Fatal("an answer was evicted for a log entry")
	}

	// An answer waits its lifetime, a log entry a few seconds.
	d.answered("late", allowAnswer)
	d.logged("early", authzError)
	*clock = clock.Add(loggedFirstTTL + time.Second)
	if r := d.answered("early", allowAnswer); r != nil {
		t.Fatal("a log entry outlived its wait")
	}
	*clock = clock.Add(time.Minute)
	if r := d.logged("late", authzError); r != nil {
		t.Fatal("an answer outlived its lifetime")
	}
	*clock = clock.Add(loggedFirstTTL + time.Second)
	if r := d.logged("early", authzError); r != nil {
		t.Fatal("an answer outlived its lifetime")
	}
	if counts[deliveryUnconfirmed] != 2 {
		t.Fatalf("counts %v: the two expired answers are unconfirmed", counts)
	}
}

func TestARequestWithoutAnIDIsNotTracked(t *testing.T) {
	d, _, _ := countedDeliveries(10, time.Minute)
	if d.answered("", allowAnswer) != nil || d.logged("", authzError) != nil || d.len() != 0 {
		t.Fatal("a request without x-request-id was kept")
	}
}

// BenchmarkDeliveryMatch is one request's cost on the delivery path: its
// answer kept, Envoy's access log entry read and matched.
func BenchmarkDeliveryMatch(b *testing.B) {
	d := newDeliveries(defaultDeliveryEntries, defaultDeliveryTTL, nil)
	entry := logEntry("", 200, "via_upstream", "", true)
	ids := make([]string, 4096)
	for i := range ids {
		ids[i] = fmt.Sprintf("9f8e7d6c-5b4a-4321-8765-%012d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		id := ids[i%len(ids)]
		d.answered(id, allowAnswer)
		entry.Request.RequestId = id
		d.logged(id, recordOf(entry))
	}
}

func TestAShedAnswerIsJudgedOnlyToCorrectItsLeaf(t *testing.T) {
	d, counts, _ := countedDeliveries(10, time.Minute)
	shed := answer{decisionID: "d-shed", status: 503, presumedLost: true}

	d.answered("req-applied", shed)
	r := d.logged("req-applied", accessRecord{responseCode: 503, details: detailsAuthzDenied, decisionID: "d-shed"})
	if r == nil || r.reason != receiptShedDelivered {
		t.Fatalf("Envoy applied the shed refusal: receipt %+v, want %s", r, receiptShedDelivered)
	}
	d.answered("req-lost", shed)
	if r := d.logged("req-lost", authzError); r != nil {
		t.Fatalf("Envoy gave up as presumed: receipt %+v, want none", r)
	}
	if counts[deliveryCorrected] != 1 || counts[deliveryUndelivered] != 1 {
		t.Fatalf("counts %v, want one corrected and one undelivered", counts)
	}
}
