package durablelog

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"nexus.local/opa-enforcer/internal/promreg"
)

// Reasons an event is counted as refused.
const (
	// refusedWrite: the journal could not write or fsync it (a full disk);
	// the decision was refused to the client.
	refusedWrite = "write"
	// refusedIntake: the intake refused it for its content; it is kept in
	// refused/ on the enforcer.
	refusedIntake = "intake"
)

var fsyncBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5}

type logMetrics struct {
	buffered prometheus.Gauge
	oldest   prometheus.GaugeFunc
	shipped  prometheus.Counter
	refused  *prometheus.CounterVec
	retries  prometheus.Counter
	fsync    prometheus.Histogram
	appended *prometheus.CounterVec
}

// newLogMetrics: oldestCreated reports when the oldest unshipped segment
// was created (zero time: nothing unshipped).
func newLogMetrics(oldestCreated func() time.Time) *logMetrics {
	m := &logMetrics{
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nexus_decision_log_buffered_events",
			Help: "Decision events committed on the enforcer's disk and not yet acknowledged by the intake.",
		}),
		oldest: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nexus_decision_log_oldest_unshipped_age_seconds",
			Help: "Age of the oldest decision-log segment not yet acknowledged (0: none).",
		}, func() float64 {
			t := oldestCreated()
			if t.IsZero() {
				return 0
			}
			return time.Since(t).Seconds()
		}),
		shipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nexus_decision_log_shipped_events_total",
			Help: "Decision events the intake acknowledged (a re-upload after a crash counts again).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nexus_decision_log_refused_events_total",
			Help: "Decision events refused: write (not recorded locally, the request was refused) or intake (refused for content, kept in refused/).",
		}, []string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nexus_decision_log_upload_retries_total",
			Help: "Uploads retried after a network error, a 5xx, a 401/403/408 or a 429.",
		}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nexus_decision_log_fsync_seconds",
			Help:    "Latency of one group commit's fsync.",
			Buckets: fsyncBuckets,
		}),
	}
	m.appended = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nexus_decision_log_appended_events_total",
		Help: "Decision events appended, by how far their answer waited (wait_for: fsync, write, none; the tenant's choice, else the enforcer's default).",
	}, []string{"wait_for"})
	for _, level := range []waitLevel{waitFsync, waitWrite, waitNone} {
		m.appended.WithLabelValues(level.String())
	}
	m.refused.WithLabelValues(refusedWrite)
	m.refused.WithLabelValues(refusedIntake)
	return m
}

// register adds the metrics to OPA's registry (nil in tests). A plugin
// created again keeps the collectors already registered, except the age
// gauge, whose function is the new plugin's.
func (m *logMetrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	var err error
	if m.buffered, err = promreg.Registered(reg, m.buffered); err != nil {
		return err
	}
	if m.shipped, err = promreg.Registered(reg, m.shipped); err != nil {
		return err
	}
	if m.refused, err = promreg.Registered(reg, m.refused); err != nil {
		return err
	}
	if m.retries, err = promreg.Registered(reg, m.retries); err != nil {
		return err
	}
	if m.appended, err = promreg.Registered(reg, m.appended); err != nil {
		return err
	}
	if m.fsync, err = promreg.Registered(reg, m.fsync); err != nil {
		return err
	}
	reg.Unregister(m.oldest)
	return reg.Register(m.oldest)
}
