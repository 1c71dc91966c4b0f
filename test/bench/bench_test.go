// Package bench measures nodefw against its peers, as root, in network
// namespaces joined by veth pairs:
//
//   - the packet path: new TCP flows per second through a firewall whose
//     last rule is the one that accepts them, nodefw's sets against the same
//     rules as linear iptables-nft rules;
//   - programming: a full apply of 1,000, 10,000 and 50,000 rules against
//     iptables-nft-restore and `nft -f` of the rendered ruleset, a one-rule
//     change at 10,000 rules, and the peak memory of a process applying
//     10,000 rules;
//   - a blocklist: a set of 100,000 entries referenced by one Drop rule,
//     its new-flow rate against no table, its full apply and a one-entry
//     change;
//   - the resolver: 5,000 nodes and 1,000 policies on one core;
//   - with -fanout, the control plane's fan-out, from the output of the
//     controllers package's TestFanOut and TestSetFanOut in envtest: a
//     policy change, a change of a large address set, and a node join;
//   - with -fleet, the manager on 5,000 nodes and 1,000 policies, from the
//     output of test/fleet's TestLargeCluster in envtest.
//
// `go test ./test/bench` runs a short mode with small sizes and single
// repetitions, so the benchmark keeps working; `make bench` runs the full
// sizes (-full) and prints a Markdown table of medians. No number fails
// the test: the table says which goals are met.
package bench

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	full = flag.Bool("full", false, "full sizes and repetitions (make bench); the default is the short mode")
	out  = flag.String("out", "", "also write the Markdown report to this file")
	// fanout is the output of the controllers package's TestFanOut and
	// TestSetFanOut, which `make bench` runs first (they need envtest,
	// not root).
	fanout = flag.String("fanout", "", "add the fan-out figures from this TestFanOut and TestSetFanOut output")
	// scale is the output of test/agent's TestRulesThroughTheAPI runs.
	scale = flag.String("scale", "", "add the end-to-end figures from this TestRulesThroughTheAPI output")
	// fleetLog is the output of test/fleet's TestLargeCluster.
	fleetLog = flag.String("fleet", "", "add the large-cluster figures from this TestLargeCluster output")
)

// config sizes one run.
type config struct {
	name string
	// packetRules is the ruleset size of the packet path; flowTime is how
	// long one measurement of the flow rate sends.
	packetRules int
	flowTime    time.Duration
	flowWorkers int
	// applySizes are the full-apply sizes; incrRules and memRules the
	// sizes of the one-rule change and of the memory figure.
	applySizes []int
	incrRules  int
	memRules   int
	// blocklist is the number of entries of the blocklist set.
	blocklist int
	// nodes and policies size the resolver.
	nodes, policies int
	// reps repeats every timing; slowReps the slow ones (50,000 rules
	// through iptables-nft-restore).
	reps, slowReps int
}

var (
	fullConfig = config{
		name:        "full",
		packetRules: 10000, flowTime: 2 * time.Second, flowWorkers: 2,
		applySizes: []int{1000, 10000, 50000}, incrRules: 10000, memRules: 10000, blocklist: 100000,
		nodes: 5000, policies: 1000,
		reps: 5, slowReps: 3,
	}
	shortConfig = config{
		name:        "short",
		packetRules: 1000, flowTime: 300 * time.Millisecond, flowWorkers: 2,
		applySizes: []int{100, 1000}, incrRules: 1000, memRules: 1000, blocklist: 1000,
		nodes: 200, policies: 50,
		reps: 1, slowReps: 1,
	}
)

// row is one line of the report.
type row struct {
	figure, ours, peer, ratio, goal, result string
}

type report struct {
	cfg  config
	rows []row
	// notes explain figures the table cannot.
	notes []string
}

func (r *report) add(x row) { r.rows = append(r.rows, x) }

func (r *report) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// verdict says whether a goal is met.
func verdict(ok bool) string {
	if ok {
		return "pass"
	}
	return "falls short"
}

// machine describes where the numbers come from.
func machine() string {
	var u unix.Utsname
	_ = unix.Uname(&u)
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	version := func(name string, args ...string) string {
		b, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return name + ": not found"
		}
		return strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	}
	return fmt.Sprintf("- CPU: %s, %d cores (GOMAXPROCS %d)\n- kernel: Linux %s\n- %s\n- %s\n- %s\n",
		cpu, runtime.NumCPU(), runtime.GOMAXPROCS(0), unix.ByteSliceToString(u.Release[:]),
		version("iptables-nft", "--version"), version("nft", "--version"), runtime.Version())
}

func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Results (%s mode, medians)\n\n", r.cfg.name)
	b.WriteString("| figure | ours | peer | ratio | goal | result |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, x := range r.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", x.figure, x.ours, x.peer, x.ratio, x.goal, x.result)
	}
	if len(r.notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.notes {
			b.WriteString("- " + n + "\n")
		}
	}
	b.WriteString("\n## Machine\n\n" + machine())
	return b.String()
}

// median of durations or rates.
func median[T int64 | float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= 100*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// TestBenchmarks runs every benchmark and prints the report.
func TestBenchmarks(t *testing.T) {
	cfg := shortConfig
	if *full && !testing.Short() {
		cfg = fullConfig
	}
	r := &report{cfg: cfg}
	root := os.Geteuid() == 0
	if root {
		t.Run("packet", func(t *testing.T) { benchPacketPath(t, r) })
		t.Run("blocklist", func(t *testing.T) { benchBlocklist(t, r) })
		t.Run("apply", func(t *testing.T) { benchFullApply(t, r) })
		t.Run("incremental", func(t *testing.T) { benchIncremental(t, r) })
		t.Run("memory", func(t *testing.T) { benchMemory(t, r) })
	} else {
		r.note("Not root: the packet path, programming and memory figures need network namespaces and were skipped.")
	}
	t.Run("resolver", func(t *testing.T) { benchResolver(t, r) })
	if *fanout != "" {
		t.Run("fanout", func(t *testing.T) { benchFanOut(t, r, *fanout) })
		t.Run("setfanout", func(t *testing.T) { benchSetFanOut(t, r, *fanout) })
	}
	if *scale != "" {
		t.Run("scale", func(t *testing.T) { benchScale(t, r, *scale) })
	}
	if *fleetLog != "" {
		t.Run("fleet", func(t *testing.T) { benchFleet(t, r, *fleetLog) })
	}
	md := r.markdown()
	fmt.Println(md)
	if *out != "" {
		cmd := "make bench BENCH_OUT=docs/benchmarks.md"
		if cfg.name != "full" {
			cmd = "go test ./test/bench -run TestBenchmarks -v"
		}
		doc := "# Benchmarks\n\nProduced by `" + cmd + "` (as root), which runs the controllers package's `TestFanOut` and `TestSetFanOut`, " +
			"test/agent's `TestRulesThroughTheAPI` and test/fleet's `TestLargeCluster` in envtest and then `test/bench` with `-full`. " +
			"The notes under the table say what each figure measures; the package documentation of `test/bench` has more.\n\n" + md
		if err := os.WriteFile(*out, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
