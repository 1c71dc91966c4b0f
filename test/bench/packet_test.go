package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// mergedOpts are the agent's options with one counter per lookup of a
// run, as before every rule of a run counted on its own.
var mergedOpts = func() compile.Options {
	o := options()
	o.MergedRunCounters = true
	return o
}()

// connectRate is the new-flow rate from the client to the host's probe
// port (see netnstest.NS.ConnectRate).
func connectRate(client *netnstest.NS, workers int, d time.Duration) (float64, error) {
	return client.ConnectRate(netnstest.HostV4, probePort, workers, d)
}

// benchPacketPath compares the new-flow rate through the last rule at 1
// rule and at cfg.packetRules rules, ours against the same rules as
// iptables-nft rules. Each of the four setups has a client and host pair
// of its own, and the measurements take turns in short windows, so that
// load from elsewhere on the machine weighs on all four alike. Two more
// setups, in the same rounds, give the cost of per-rule counters in runs
// and of logging.
func benchPacketPath(t *testing.T, r *report) {
	n := r.cfg.packetRules
	var setups []*flowSetup
	for _, c := range []struct {
		name  string
		rules int
		ours  bool
		// opts, when set, compile ours otherwise than agents do.
		opts *compile.Options
		// audited puts an audited, logged Drop of the probe first.
		audited bool
	}{
		{name: "ours1", rules: 1, ours: true}, {name: "ours", rules: n, ours: true},
		{name: "iptables1", rules: 1}, {name: "iptables", rules: n},
		// The cost of per-rule counters in runs: the same rules with one
		// counter per lookup, as before every element counted.
		{name: "oursMerged", rules: n, ours: true, opts: &mergedOpts},
		// The cost of logging: every probe meets a logged Drop rule in
		// audit mode, which logs it (rate-limited) and lets it go on.
		{name: "ours1Logged", rules: 1, ours: true, audited: true},
	} {
		pair := netnstest.NewTestPair(t)
		if _, err := pair.Host.ServeTCP(probePort); err != nil {
			t.Fatal(err)
		}
		spec := benchSpec(c.rules)
		if c.audited {
			spec.Rules = append([]v1alpha1.NodeFirewallRule{{
				Policy: "bench", Mode: v1alpha1.PolicyModeAudit, Name: "audited-drop", Chain: v1alpha1.ChainInput,
				Action: v1alpha1.ActionDrop, Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: probePort}},
			}}, spec.Rules...)
		}
		opts := options()
		if c.opts != nil {
			opts = *c.opts
		}
		if c.ours {
			if _, _, err := oursApplyWith(programmer(t, pair.Host), spec, opts); err != nil {
				t.Fatal(err)
			}
		} else if _, _, err := iptablesRestore(pair.Host, spec); err != nil {
			t.Fatal(err)
		}
		setups = append(setups, newFlowSetup(t, r.cfg, c.name, pair))
	}
	rate := medianRates(t, r.cfg, setups)
	t.Logf("rates: %v", rate)
	base, ours, peer := rate["ours1"], rate["ours"], rate["iptables"]
	r.add(row{
		figure: "new TCP flows/s, match at rule 1",
		ours:   fmt.Sprintf("%.0f", base), peer: fmt.Sprintf("%.0f", rate["iptables1"]),
		ratio: fmt.Sprintf("%.2f", base/rate["iptables1"]), goal: "—", result: "—",
	})
	r.add(row{
		figure: fmt.Sprintf("new TCP flows/s, match at rule %s", thousands(n)),
		ours:   fmt.Sprintf("%.0f", ours), peer: fmt.Sprintf("%.0f", peer),
		ratio: fmt.Sprintf("%.1f", ours/peer),
		goal:  "ours ≥ 90% of ours at rule 1", result: fmt.Sprintf("%s (%.0f%%)", verdict(ours >= 0.9*base), 100*ours/base),
	})
	merged, logged := rate["oursMerged"], rate["ours1Logged"]
	r.add(row{
		figure: fmt.Sprintf("new TCP flows/s, match at rule %s, per-rule counters on (peer: one counter per lookup)", thousands(n)),
		ours:   fmt.Sprintf("%.0f", ours), peer: fmt.Sprintf("%.0f", merged),
		ratio: fmt.Sprintf("%.2f", ours/merged),
		goal:  "on ≥ 90% of ours at rule 1", result: fmt.Sprintf("%s (%.0f%%)", verdict(ours >= 0.9*base), 100*ours/base),
	})
	r.add(row{
		figure: "new TCP flows/s, match at rule 1 behind a logged audit Drop (peer: unlogged)",
		ours:   fmt.Sprintf("%.0f", logged), peer: fmt.Sprintf("%.0f", base),
		ratio: fmt.Sprintf("%.2f", logged/base), goal: "—", result: "—",
	})
	r.note("Per-rule counters: ours counts every rule of a run on its own, with a counter on each element of the run's "+
		"sets; the peer row compiles the same %s rules with one counter per lookup instead (compile option "+
		"MergedRunCounters), measured in the same rounds. Logging: the probe first meets an audit-mode Drop rule "+
		"that counts it, passes the default log rate limit and logs to the agent's NFLOG group; nothing reads the "+
		"group in the benchmark, so the figure is the packet path's cost, not the reader's.", thousands(n))
	r.note("Flows: TCP connections from a client namespace to a host namespace over veth, %d connecting threads, "+
		"each connection reset at once; every SYN is a new flow that walks the host's input chain to the one rule "+
		"that accepts it, after %s rules that do not match it (an allowlist of TCP/UDP ports from IPv4 hosts, /24s "+
		"and IPv6 /48s). Peer: the same rules loaded with iptables-nft-restore and ip6tables-nft-restore, "+
		"one iptables rule per nodefw rule. The setups take turns in windows of %s, %d rounds; the "+
		"rates are medians over the windows.", r.cfg.flowWorkers, thousands(n-1), r.cfg.flowTime/4, 4*r.cfg.reps)
}

// flowSetup is one host whose new-flow rate is measured beside others'.
type flowSetup struct {
	name   string
	client *netnstest.NS
	rates  []float64
}

// newFlowSetup lets the host's closed connections go at once, so that
// conntrack never fills, and warms up listener, caches and conntrack.
func newFlowSetup(t *testing.T, cfg config, name string, pair *netnstest.Pair) *flowSetup {
	t.Helper()
	for _, k := range []string{"nf_conntrack_tcp_timeout_close", "nf_conntrack_tcp_timeout_time_wait"} {
		_ = pair.Host.Sysctl("net/netfilter/"+k, "1")
	}
	if _, err := connectRate(pair.Client, cfg.flowWorkers, cfg.flowTime/4); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &flowSetup{name: name, client: pair.Client}
}

// medianRates measures the setups in interleaved rounds, so that the
// machine's noise falls on all of them alike, and returns each one's
// median new-flow rate by name.
func medianRates(t *testing.T, cfg config, setups []*flowSetup) map[string]float64 {
	t.Helper()
	for range 4 * cfg.reps {
		for _, s := range setups {
			rate, err := connectRate(s.client, cfg.flowWorkers, cfg.flowTime/4)
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			s.rates = append(s.rates, rate)
		}
	}
	rate := map[string]float64{}
	for _, s := range setups {
		rate[s.name] = median(s.rates)
	}
	return rate
}
