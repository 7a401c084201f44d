package extauthz

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Admission control: at most max-in-flight Checks are past admission at
// once; the others wait, in arrival order, for at most max-queue-wait-ms
// (and never past their own gRPC deadline), then are answered at once with
// a refusal (status, retry-after, a JSON reason) without the policy being
// evaluated. Past capacity the enforcer then serves what it can within the
// wait bound and refuses the rest cheaply, instead of evaluating every
// request only to answer it after Envoy has given up (its ext_authz
// timeout). A shed Check is still a logged decision (result.shed: its reason),
// so the audit log holds every request Envoy asked about; its body is not
// parsed (it was not read), which keeps the refusal cheap.
//
// Concurrency rather than a request rate is bounded: what the enforcer
// can absorb depends on the policy and the machine, and queueing delay is
// what the client feels; both are exported as metrics (metrics.go).
type AdmissionConfig struct {
	// MaxInFlight: Checks admitted at once; 0 turns admission control
	// off. Default: defaultInFlightPerCPU per CPU OPA may use.
	MaxInFlight *int `json:"max-in-flight"`
	// MaxQueueWaitMS: how long a Check may wait for admission; 0 sheds at
	// once when max-in-flight Checks are in.
	MaxQueueWaitMS *int `json:"max-queue-wait-ms"`
	// Status answers a shed Check: 503 (the enforcer is out of capacity,
	// the default) or 429.
	Status int `json:"status"`
	// RetryAfterSeconds goes to the client as retry-after; 0 sends none.
	RetryAfterSeconds *int `json:"retry-after-seconds"`
}

// Admission defaults. A Check holds its slot through evaluation and
// decision logging, which waits on locks, and on a shared machine its
// threads are preempted: a limit near the CPU count (2 per CPU was tried)
// then throttles an enforcer well below its capacity (at 1000 Checks/s
// on the 2-CPU test VM, 8 per CPU still timed out 5 %, 32 per CPU none).
// The wait bound stays well under Envoy's ext_authz timeout (250 ms in
// our Envoy configuration) so an admitted Check is answered in time.
const (
	defaultInFlightPerCPU    = 32
	defaultMaxQueueWait      = 50 * time.Millisecond
	defaultShedStatus        = 503
	defaultRetryAfterSeconds = 1
)

// admission is AdmissionConfig validated, defaults filled in.
type admission struct {
	maxInFlight int
	maxWait     time.Duration
	status      int
	retryAfter  int
}

func (c *AdmissionConfig) resolve() (admission, error) {
	a := admission{
		maxInFlight: defaultInFlightPerCPU * runtime.GOMAXPROCS(0),
		maxWait:     defaultMaxQueueWait,
		status:      defaultShedStatus,
		retryAfter:  defaultRetryAfterSeconds,
	}
	if c == nil {
		return a, nil
	}
	if c.MaxInFlight != nil {
		if *c.MaxInFlight < 0 {
			return a, errors.New("admission.max-in-flight must be 0 (no limit) or more")
		}
		a.maxInFlight = *c.MaxInFlight
	}
	if c.MaxQueueWaitMS != nil {
		if *c.MaxQueueWaitMS < 0 {
			return a, errors.New("admission.max-queue-wait-ms must not be negative")
		}
		a.maxWait = time.Duration(*c.MaxQueueWaitMS) * time.Millisecond
	}
	switch c.Status {
	case 0:
	case 429, 503:
		a.status = c.Status
	default:
		return a, fmt.Errorf("admission.status must be 429 or 503, not %d", c.Status)
	}
	if c.RetryAfterSeconds != nil {
		if *c.RetryAfterSeconds < 0 {
			return a, errors.New("admission.retry-after-seconds must not be negative")
		}
		a.retryAfter = *c.RetryAfterSeconds
	}
	return a, nil
}

// limiter admits Checks. slots holds a token per admitted Check; a Go
// channel's blocked senders are served in arrival order.
type limiter struct {
	cfg   admission
	slots chan struct{} // nil: no limit
}

func newLimiter(cfg admission) *limiter {
	l := &limiter{cfg: cfg}
	if cfg.maxInFlight > 0 {
		l.slots = make(chan struct{}, cfg.maxInFlight)
	}
	return l
}

// Why a Check was shed, the reason label of the shed counter.
const (
	shedQueueTimeout = "queue_timeout" // no slot within max-queue-wait-ms
	shedDeadline     = "deadline"      // its deadline passed first
	shedCancelled    = "cancelled"     // Envoy cancelled it first
	shedAbandoned    = "abandoned"     // Envoy gave up while it was evaluated
)

// admit lets the Check in, or says why not. An admitted Check must call
// release when its evaluation is done. waited is the time spent queueing.
func (l *limiter) admit(ctx context.Context) (release func(), waited time.Duration, shed string) {
	if l.slots == nil {
		return l.admitted(ctx, nil, 0)
	}
	select {
	case l.slots <- struct{}{}:
		return l.admitted(ctx, l.release, 0)
	default:
	}
	if l.cfg.maxWait <= 0 {
		return nil, 0, shedQueueTimeout
	}
	start := time.Now()
	timer := time.NewTimer(l.cfg.maxWait)
	defer timer.Stop()
	select {
	case l.slots <- struct{}{}:
		return l.admitted(ctx, l.release, time.Since(start))
	case <-timer.C:
		return nil, time.Since(start), shedQueueTimeout
	case <-ctx.Done():
		return nil, time.Since(start), contextShed(ctx)
	}
}

func (l *limiter) release() { <-l.slots }

// admitted sheds a Check whose caller is gone even so: evaluating it
// would spend CPU on an answer nobody reads.
func (l *limiter) admitted(ctx context.Context, release func(), waited time.Duration) (func(), time.Duration, string) {
	if ctx.Err() != nil {
		if release != nil {
			release()
		}
		return nil, waited, contextShed(ctx)
	}
	if release == nil {
		release = func() {}
	}
	return release, waited, ""
}

func contextShed(ctx context.Context) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return shedDeadline
	}
	return shedCancelled
}

// ruleAdmission is the reason rule of a shed Check.
const ruleAdmission = "nexus.admission"

// shedRefusal is the answer to a shed Check.
func (l *limiter) shedRefusal(reason string) *refusal {
	var message string
	switch reason {
	case shedQueueTimeout:
		message = "the enforcer is over capacity: every evaluation slot is taken"
		if l.cfg.maxWait > 0 {
			message = "the enforcer is over capacity: no evaluation slot freed within " + l.cfg.maxWait.String()
		}
	case shedDeadline:
		message = "the request's deadline passed before it could be evaluated"
	case shedAbandoned:
		message = "the caller gave up while the request was evaluated: no answer reached it"
	default:
		message = "the request was cancelled before it could be evaluated"
	}
	r := &refusal{status: l.cfg.status, rule: ruleAdmission, message: message, controls: capacityControls, shed: reason}
	if l.cfg.retryAfter > 0 {
		r.headers = []*corev3.HeaderValueOption{
			headerOption("retry-after", strconv.Itoa(l.cfg.retryAfter), corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		}
	}
	return r
}
