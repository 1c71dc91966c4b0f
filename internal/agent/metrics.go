package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodefw/nodefw/internal/nft"
)

// The metrics endpoint is served over HTTPS by default, and each scrape is
// authenticated with a TokenReview and authorized with a
// SubjectAccessReview, which the agent creates.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

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

// ruleCounters exports the kernel's per-rule counters at scrape time: how
// many packets each counted rule matched, audit-mode rules (the packets they
// would have dropped) and logged rules included. Rules are named by their
// comment, "<policy>/<rule>" for policy rules; a rule inside a set run is
// the sum of the counters of the set elements it owns.
type ruleCounters struct {
	read    func() ([]nft.RuleCounter, error)
	packets *prometheus.Desc
	bytes   *prometheus.Desc
}

// NewRuleCounters returns a collector over read, typically the nftables
// programmer's Counters.
func NewRuleCounters(read func() ([]nft.RuleCounter, error)) prometheus.Collector {
	labels := []string{"chain", "rule"}
	return &ruleCounters{
		read:    read,
		packets: prometheus.NewDesc("nodefw_agent_rule_packets_total", "Packets matched by a counted rule of the agent's table.", labels, nil),
		bytes:   prometheus.NewDesc("nodefw_agent_rule_bytes_total", "Bytes matched by a counted rule of the agent's table.", labels, nil),
	}
}

func (c *ruleCounters) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
}

func (c *ruleCounters) Collect(ch chan<- prometheus.Metric) {
	counts, err := c.read()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.packets, err)
		return
	}
	// Rules that share a comment (one API rule split by address family)
	// add up.
	type key struct{ chain, rule string }
	sum := map[key]nft.RuleCounter{}
	var order []key
	for _, rc := range counts {
		k := key{rc.Chain, rc.Comment}
		if _, ok := sum[k]; !ok {
			order = append(order, k)
		}
		s := sum[k]
		s.Packets += rc.Packets
		s.Bytes += rc.Bytes
		sum[k] = s
	}
	for _, k := range order {
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(sum[k].Packets), k.chain, k.rule)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(sum[k].Bytes), k.chain, k.rule)
	}
}
