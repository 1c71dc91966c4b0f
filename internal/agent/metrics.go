package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the agent's Prometheus metrics, all prefixed nodefw_agent_.
type Metrics struct {
	Applies         prometheus.Counter
	ApplyErrors     prometheus.Counter
	ApplyDuration   prometheus.Histogram
	DriftRepairs    prometheus.Counter
	RulesProgrammed prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg when it is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Applies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodefw_agent_applies_total", Help: "Rulesets committed to the kernel.",
		}),
		ApplyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodefw_agent_apply_errors_total", Help: "Rulesets that failed to compile or commit; the previous ruleset stayed.",
		}),
		ApplyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nodefw_agent_apply_duration_seconds", Help: "Time to commit one ruleset in one netlink transaction.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		DriftRepairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodefw_agent_drift_repairs_total", Help: "Times the table was restored after another process changed or removed it.",
		}),
		RulesProgrammed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodefw_agent_rules_programmed", Help: "nftables rules in the agent's table.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Applies, m.ApplyErrors, m.ApplyDuration, m.DriftRepairs, m.RulesProgrammed)
	}
	return m
}
