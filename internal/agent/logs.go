package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// LogMetrics count the agent's drop-log lines.
type LogMetrics struct {
	// Logged counts lines written, by policy, rule and verdict.
	Logged *prometheus.CounterVec
	// Dropped counts lines lost, by reason: the queue to the writer was
	// full, or the kernel's socket buffer overflowed.
	Dropped *prometheus.CounterVec
}

// NewLogMetrics creates the metrics and registers them with reg when it is
// not nil.
func NewLogMetrics(reg prometheus.Registerer) *LogMetrics {
	m := &LogMetrics{
		Logged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodefw_agent_logged_packets_total", Help: "Logged packets written as JSON lines, by policy, rule and verdict.",
		}, []string{"policy", "rule", "verdict"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodefw_agent_log_lines_dropped_total", Help: "Logged packets not written, by reason (queue_full, kernel_buffer, write_error).",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.Logged, m.Dropped)
	}
	return m
}

// CounterVec adapts a Prometheus counter vector to nflog.Counter.
type CounterVec struct{ *prometheus.CounterVec }

// Inc increments the counter of the labels.
func (c CounterVec) Inc(labels ...string) { c.WithLabelValues(labels...).Inc() }
