package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/nft"
	"github.com/nodefw/nodefw/internal/reference"
	"github.com/nodefw/nodefw/internal/specgen"
)

// probePort is where the packet path's flows go; only the last rule of
// every benchmark ruleset accepts it.
const probePort = 5001

// benchSpec is specgen.Allowlist of n rules whose last rule accepts TCP
// probePort from the client of netnstest.Pair; the other rules never match
// the client's probe.
func benchSpec(n int) v1alpha1.NodeFirewallSpec {
	return specgen.Allowlist(n, probePort, netnstest.ClientV4.String(), netnstest.ClientV6.String())
}

// options are the agent's defaults (set lookups on), the
// compiled form whose costs the benchmark measures.
func options() compile.Options {
	return compile.Options{FailsafeInbound: compile.DefaultFailsafeInbound(), FailsafeOutbound: compile.DefaultFailsafeOutbound(), SetLookups: true}
}

func iptablesOptions() compile.Options {
	return compile.Options{FailsafeInbound: compile.DefaultFailsafeInbound(), FailsafeOutbound: compile.DefaultFailsafeOutbound()}
}

// run runs a command inside a namespace, feeding it stdin, and returns how
// long it took and its peak resident set in KiB. The command is started
// from a thread inside the namespace, so no `ip netns exec` adds to its
// time.
func run(ns *netnstest.NS, stdin string, name string, args ...string) (time.Duration, int64, error) {
	var took time.Duration
	var peak int64
	err := ns.Do(func() error {
		cmd := exec.Command(name, args...)
		cmd.Stdin = strings.NewReader(stdin)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		var err error
		peak, err = peakRSS(cmd)
		took = time.Since(start)
		if err != nil {
			return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
		}
		return nil
	})
	return took, peak, err
}

// peakRSS runs cmd to its end and returns its peak resident set in KiB:
// the high-water mark of the process's own memory (VmHWM), read every
// millisecond while it runs. The rusage of a child is no good here: the
// child of a vfork shares its parent's memory until it execs, and the
// kernel counts that into the child's maximum.
func peakRSS(cmd *exec.Cmd) (int64, error) {
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	var peak int64
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if v := vmHWM(status); v > peak {
			peak = v
		}
		select {
		case err := <-done:
			return peak, err
		case <-tick.C:
		}
	}
}

// vmHWM reads the VmHWM line of a /proc status file, in KiB; 0 when the
// process is gone.
func vmHWM(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return parseVmHWM(string(b))
}

func parseVmHWM(status string) int64 {
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// iptablesRestore loads a spec with iptables-nft-restore and
// ip6tables-nft-restore, each replacing its family's filter table, and
// returns the time from the spec to both tables committed and the larger
// peak RSS of the two, in KiB.
func iptablesRestore(ns *netnstest.NS, spec v1alpha1.NodeFirewallSpec) (time.Duration, int64, error) {
	start := time.Now()
	v4, v6 := reference.IPTablesRestore(spec, iptablesOptions())
	_, p4, err := run(ns, v4, "iptables-nft-restore")
	if err != nil {
		return 0, 0, err
	}
	_, p6, err := run(ns, v6, "ip6tables-nft-restore")
	if err != nil {
		return 0, 0, err
	}
	return time.Since(start), max(p4, p6), nil
}

// clearIptables deletes the filter tables iptables-nft made.
func clearIptables(ns *netnstest.NS) error {
	_, _, err := run(ns, "", "sh", "-c", "nft delete table ip filter 2>/dev/null; nft delete table ip6 filter 2>/dev/null; true")
	return err
}

// nftLoad loads a spec's rendered ruleset with `nft -f`, and returns the
// time from the spec to the table committed.
func nftLoad(ns *netnstest.NS, spec v1alpha1.NodeFirewallSpec) (time.Duration, error) {
	start := time.Now()
	rs, err := compile.Compile(spec, options())
	if err != nil {
		return 0, err
	}
	if _, _, err := run(ns, compile.Render(rs), "nft", "-f", "-"); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// oursApply compiles and applies a spec, and returns the time from the
// spec to the table committed, and the batches Apply sent.
func oursApply(p *nft.Programmer, spec v1alpha1.NodeFirewallSpec) (time.Duration, nft.ApplyStats, error) {
	return oursApplyWith(p, spec, options())
}

func oursApplyWith(p *nft.Programmer, spec v1alpha1.NodeFirewallSpec, opts compile.Options) (time.Duration, nft.ApplyStats, error) {
	start := time.Now()
	rs, err := compile.Compile(spec, opts)
	if err != nil {
		return 0, nft.ApplyStats{}, err
	}
	stats, err := p.Apply(rs)
	if err != nil {
		return 0, nft.ApplyStats{}, err
	}
	return time.Since(start), stats, nil
}

func programmer(t *testing.T, ns *netnstest.NS) *nft.Programmer {
	t.Helper()
	p, err := nft.New(ns.Path(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
