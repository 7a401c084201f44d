package extauthz

import (
	"github.com/prometheus/client_golang/prometheus"

	"nexus.local/opa-enforcer/internal/promreg"
)

// Outcomes of a Check, the outcome label of nexus_extauthz_checks_total.
const (
	outcomeAllowed = "allowed" // the policy allowed it (or dry-run let it through)
	outcomeDenied  = "denied"  // the policy refused it
	outcomeRefused = "refused" // the plugin refused it: malformed path, query or body
	outcomeShed    = "shed"    // admission control refused it
	outcomeError   = "error"   // a gRPC error: Envoy refuses (failure_mode_allow false)
	// outcomeReservation: the policy allowed it, but its worst case did
	// not fit beside the budget holds of requests in flight (reservations.go).
	outcomeReservation = "reservation_refused"
)

// checkMetrics are the plugin's Prometheus metrics, served on OPA's
// /metrics with OPA's own.
type checkMetrics struct {
	inFlight   prometheus.Gauge
	queueDelay prometheus.Histogram
	shed       *prometheus.CounterVec
	checks     *prometheus.CounterVec
	// deliveries: answers matched with Envoy's access log (delivery.go).
	deliveries *prometheus.CounterVec
	// logDuration: the decision log's share of a Check (mask, encode, and
	// with the durable log waiting, the group commit's fsync).
	logDuration prometheus.Histogram
	// reservations: budget holds kept (reservations.go).
	reservations prometheus.Gauge
}

// queueDelayBuckets span an immediate admission to Envoy's 250 ms timeout.
var queueDelayBuckets = []float64{0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25}

// logDurationBuckets resolve the sub-millisecond target on the durable
// log's added p99 (issue 10) as well as a slow disk's fsync.
var logDurationBuckets = []float64{0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1}

func newCheckMetrics() *checkMetrics {
	m := &checkMetrics{
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nexus_extauthz_in_flight",
			Help: "Checks admitted and not yet answered.",
		}),
		queueDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nexus_extauthz_queue_delay_seconds",
			Help:    "Time a Check waited for admission, admitted or shed.",
			Buckets: queueDelayBuckets,
		}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nexus_extauthz_shed_total",
			Help: "Checks refused by admission control, by reason (queue_timeout, deadline, cancelled, abandoned).",
		}, []string{"reason"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nexus_extauthz_checks_total",
			Help: "Checks answered, by outcome (allowed, denied, refused, shed, error, reservation_refused).",
		}, []string{"outcome"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nexus_extauthz_deliveries_total",
			Help: "Answers matched with Envoy's access log, by result (delivered, undelivered: a receipt was logged, unconfirmed: no log entry in time, ambiguous: a reused x-request-id, receipt_lost, corrected: a shed answer presumed lost that Envoy applied).",
		}, []string{"result"}),
		logDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nexus_extauthz_decision_log_seconds",
			Help:    "Time a Check spent handing its decision to the decision log, before the answer (with the durable log waiting: until the fsync).",
			Buckets: logDurationBuckets,
		}),
		reservations: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nexus_extauthz_budget_reservations",
			Help: "Budget holds kept: allowed priced chats whose spend no evaluated state counts yet.",
		}),
	}
	// Every series exists from the start, so a rate over it is defined
	// before the first shed.
	for _, reason := range []string{shedQueueTimeout, shedDeadline, shedCancelled, shedAbandoned} {
		m.shed.WithLabelValues(reason)
	}
	for _, outcome := range allOutcomes {
		m.checks.WithLabelValues(outcome)
	}
	for _, result := range []string{deliveryDelivered, deliveryUndelivered, deliveryUnconfirmed, deliveryAmbiguous, deliveryLost, deliveryCorrected} {
		m.deliveries.WithLabelValues(result)
	}
	return m
}

// register adds the metrics to OPA's registry (nil when OPA runs without
// one, as in tests). A plugin created again (OPA reloading its plugins)
// keeps counting in the collectors already registered.
func (m *checkMetrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	var err error
	m.inFlight, err = promreg.Registered(reg, m.inFlight)
	if err != nil {
		return err
	}
	if m.queueDelay, err = promreg.Registered(reg, m.queueDelay); err != nil {
		return err
	}
	if m.shed, err = promreg.Registered(reg, m.shed); err != nil {
		return err
	}
	if m.checks, err = promreg.Registered(reg, m.checks); err != nil {
		return err
	}
	if m.deliveries, err = promreg.Registered(reg, m.deliveries); err != nil {
		return err
	}
	if m.logDuration, err = promreg.Registered(reg, m.logDuration); err != nil {
		return err
	}
	m.reservations, err = promreg.Registered(reg, m.reservations)
	return err
}
