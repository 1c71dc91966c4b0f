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
)

// benchFullApply times a full apply into an empty namespace: ours (compile,
// then a transaction with the named sets and one with the rules),
// iptables-nft-restore of the same rules (both
// families) and `nft -f` of the rendered ruleset.
func benchFullApply(t *testing.T, r *report) {
	oursNS, iptNS, nftNS := netnstest.NewNS(t, "ours"), netnstest.NewNS(t, "ipt"), netnstest.NewNS(t, "nftf")
	p := programmer(t, oursNS)
	for _, n := range r.cfg.applySizes {
		spec := benchSpec(n)
		reps := r.cfg.reps
		if n > 10000 {
			reps = r.cfg.slowReps
		}
		var ours, interval, ipt, nftf []time.Duration
		var st nft.ApplyStats
		for range reps {
			if err := p.Delete(); err != nil {
				t.Fatal(err)
			}
			d, stats, err := oursApply(p, spec)
			if err != nil {
				t.Fatal(err)
			}
			ours, st = append(ours, d), stats
			if n == 10000 {
				// The same with interval sets only, as for rules with
				// port ranges or address ranges that are not prefixes.
				if err := p.Delete(); err != nil {
					t.Fatal(err)
				}
				opts := options()
				opts.ExactSetMin = -1
				if d, _, err = oursApplyWith(p, spec, opts); err != nil {
					t.Fatal(err)
				}
				interval = append(interval, d)
			}

			if err := clearIptables(iptNS); err != nil {
				t.Fatal(err)
			}
			d, _, err = iptablesRestore(iptNS, spec)
			if err != nil {
				t.Fatal(err)
			}
			ipt = append(ipt, d)

			if _, _, err := run(nftNS, "", "sh", "-c", "nft delete table inet nodefw 2>/dev/null; true"); err != nil {
				t.Fatal(err)
			}
			d, err = nftLoad(nftNS, spec)
			if err != nil {
				t.Fatal(err)
			}
			nftf = append(nftf, d)
		}
		o, i, f := median(ours), median(ipt), median(nftf)
		t.Logf("%d rules: ours %v (%d messages), iptables-nft-restore %v, nft -f %v", n, o, st.Messages, i, f)
		goal, result := "—", "—"
		if n == 10000 {
			goal, result = "≥ 5× faster", verdict(i >= 5*o)
		}
		r.add(row{
			figure: fmt.Sprintf("full apply, %s rules (peer: iptables-nft-restore)", thousands(n)),
			ours:   ms(o), peer: ms(i), ratio: fmt.Sprintf("%.1f× faster", float64(i)/float64(o)), goal: goal, result: result,
		})
		r.add(row{
			figure: fmt.Sprintf("full apply, %s rules (peer: nft -f)", thousands(n)),
			ours:   ms(o), peer: ms(f), ratio: fmt.Sprintf("%.1f× faster", float64(f)/float64(o)), goal: "—", result: "—",
		})
		if len(interval) > 0 {
			v := median(interval)
			r.add(row{
				figure: fmt.Sprintf("full apply, %s rules, interval sets only (peer: iptables-nft-restore)", thousands(n)),
				ours:   ms(v), peer: ms(i), ratio: fmt.Sprintf("%.1f× faster", float64(i)/float64(v)), goal: "—", result: "—",
			})
		}
	}
	r.note("Full apply: from the node's spec to the table committed, into a namespace without it: ours compiles " +
		"and sends two transactions, the named sets filled and then the rules that look them up; iptables-nft-restore and ip6tables-nft-restore load iptables-save text " +
		"rendered from the spec; `nft -f` loads compile.Render's text (the same sets as ours). Each tool has a " +
		"namespace of its own. Every element of this allowlist is one protocol, one port and a prefix, so " +
		"large runs put them all in hash sets; the row with interval sets only compiles with ExactSetMin -1, " +
		"as rules with port or address ranges would be.")
}

// changed returns spec with rule k's port moved, as an edited policy would.
func changed(spec v1alpha1.NodeFirewallSpec, k int, port int32) v1alpha1.NodeFirewallSpec {
	out := spec
	out.Rules = append([]v1alpha1.NodeFirewallRule(nil), spec.Rules...)
	r := out.Rules[k]
	r.Ports = []v1alpha1.PortRange{{Port: port}}
	out.Rules[k] = r
	return out
}

// incremental is what one-rule changes cost.
type incremental struct {
	apply, compile, check, total, drift time.Duration
	stats                               nft.ApplyStats
}

// measureIncremental applies base, then moves rule k's port back and forth
// and times each update as the agent makes it (compile, Drift, Apply),
// and a full drift check (Drift reads the whole table, as the agent's
// periodic resync does).
func measureIncremental(t *testing.T, r *report, p *nft.Programmer, base v1alpha1.NodeFirewallSpec, k int) incremental {
	specs := []v1alpha1.NodeFirewallSpec{changed(base, k, 4000), changed(base, k, 4001)}
	if err := p.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := oursApply(p, specs[1]); err != nil {
		t.Fatal(err)
	}
	var compileTimes, checkTimes, applyTimes, totals, driftTimes []time.Duration
	var stats nft.ApplyStats
	for i := range 2 * r.cfg.reps {
		spec := specs[i%2]
		start := time.Now()
		rs, err := compile.Compile(spec, options())
		if err != nil {
			t.Fatal(err)
		}
		compiled := time.Now()
		if _, err := p.Drift(rs); err != nil {
			t.Fatal(err)
		}
		synced := time.Now()
		stats, err = p.Apply(rs)
		if err != nil {
			t.Fatal(err)
		}
		done := time.Now()
		if !stats.Incremental {
			t.Errorf("change %d was a full apply: %+v", i, stats)
		}
		compileTimes = append(compileTimes, compiled.Sub(start))
		checkTimes = append(checkTimes, synced.Sub(compiled))
		applyTimes = append(applyTimes, done.Sub(synced))
		totals = append(totals, done.Sub(start))
		start = time.Now()
		if d, err := p.Drift(rs); err != nil || d != "" {
			t.Fatalf("after change %d: drift %q, %v", i, d, err)
		}
		driftTimes = append(driftTimes, time.Since(start))
	}
	return incremental{
		apply: median(applyTimes), compile: median(compileTimes), check: median(checkTimes), total: median(totals),
		drift: median(driftTimes), stats: stats,
	}
}

// withRuns returns spec with its actions alternating between Accept and
// Drop every runLen rules, the last rule kept.
func withRuns(spec v1alpha1.NodeFirewallSpec, runLen int) v1alpha1.NodeFirewallSpec {
	out := spec
	out.Rules = append([]v1alpha1.NodeFirewallRule(nil), spec.Rules...)
	for i := range len(out.Rules) - 1 {
		if (i/runLen)%2 == 1 {
			out.Rules[i].Action = v1alpha1.ActionDrop
		}
	}
	return out
}

// benchIncremental changes one rule of cfg.incrRules and times the update:
// ours sends only the changed set elements; the peer replaces the one
// iptables rule in place (iptables-nft -R).
func benchIncremental(t *testing.T, r *report) {
	n := r.cfg.incrRules
	oursNS, iptNS := netnstest.NewNS(t, "ours"), netnstest.NewNS(t, "ipt")
	p := programmer(t, oursNS)
	base := benchSpec(n)
	// An IPv4 rule in the middle of the list.
	k := n / 2
	for strings.Contains(base.Rules[k].Sources[0], ":") {
		k++
	}
	one := measureIncremental(t, r, p, base, k)
	runLen := n / 4
	runs := measureIncremental(t, r, p, withRuns(base, runLen), k)

	// The peer: the same rules through iptables-nft-restore, then one rule
	// replaced in place.
	specs := []v1alpha1.NodeFirewallSpec{changed(base, k, 4000), changed(base, k, 4001)}
	if _, _, err := iptablesRestore(iptNS, specs[1]); err != nil {
		t.Fatal(err)
	}
	var peer []time.Duration
	for i := range 2 * r.cfg.reps {
		pos, args, err := iptablesRule(specs[i%2], k)
		if err != nil {
			t.Fatal(err)
		}
		d, _, err := run(iptNS, "", "iptables-nft", append([]string{"-w", "-R", "INPUT", strconv.Itoa(pos)}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		peer = append(peer, d)
	}
	ipt := median(peer)
	t.Logf("one rule of %d: %+v; in runs of %d: %+v; iptables-nft -R %v", n, one, runLen, runs, ipt)
	r.add(row{
		figure: fmt.Sprintf("one rule changed at %s rules, one run: apply (peer: iptables-nft -R)", thousands(n)),
		ours:   ms(one.apply), peer: ms(ipt), ratio: fmt.Sprintf("%.1f× faster", float64(ipt)/float64(one.apply)),
		goal: "≤ 10 ms", result: verdict(one.apply <= 10*time.Millisecond),
	})
	r.add(row{
		figure: fmt.Sprintf("one rule changed at %s rules, one run: compile + check + apply", thousands(n)),
		ours:   ms(one.total), peer: "—", ratio: "—", goal: "≤ 10 ms", result: verdict(one.total <= 10*time.Millisecond),
	})
	r.add(row{
		figure: fmt.Sprintf("one rule changed at %s rules, runs of %s: apply", thousands(n), thousands(runLen)),
		ours:   ms(runs.apply), peer: ms(ipt), ratio: fmt.Sprintf("%.1f× faster", float64(ipt)/float64(runs.apply)),
		goal: "≤ 10 ms", result: verdict(runs.apply <= 10*time.Millisecond),
	})
	r.add(row{
		figure: fmt.Sprintf("one rule changed at %s rules: netlink messages, bytes", thousands(n)),
		ours: fmt.Sprintf("%d messages, %d bytes (%d element added, %d deleted)",
			one.stats.Messages, one.stats.Bytes, one.stats.ElementsAdded, one.stats.ElementsDeleted),
		peer: "—", ratio: "—", goal: "proportional to the change", result: verdict(one.stats.Messages <= 6),
	})
	r.add(row{
		figure: fmt.Sprintf("drift check reading the whole table (Drift) at %s rules", thousands(n)),
		ours:   ms(one.drift), peer: "—", ratio: "—", goal: "—", result: "—",
	})
	r.note("One rule changed: the port of one rule in the middle of the list, back and forth; as the agent does, "+
		"compile, check the table (Drift: %s, which knows from the ruleset it committed last, still trusted, that the table "+
		"holds another ruleset and reads nothing), apply; the apply row times Apply alone. The agent's resync "+
		"reads the whole table (the drift check row). One run: all %s rules accept, so they form one run, whose "+
		"IPv4 hosts and /24s and IPv6 /48s (all of them here) go to hash sets, one per prefix length, and whose "+
		"other elements would go to interval sets; the changed rule's element is in a hash set. Compile takes %s. "+
		"Runs of %s: the actions alternate every %s rules. Messages count the whole batch, its begin and end "+
		"included. The kernel adds or removes a hash set's element in constant time; it removes an element "+
		"from a concatenated interval set (pipapo) by walking the set's elements from the first to it, which is "+
		"why interval sets with ports of more than 1,024 elements are cut into 16 blocks of 4,096 ports, each a "+
		"set behind a port-range check.",
		ms(one.check), thousands(n), ms(one.compile), thousands(runLen), thousands(runLen))
}

// iptablesRule returns the position of rule k in iptables' INPUT chain of
// spec and the arguments that write it, from the renderer's output.
func iptablesRule(spec v1alpha1.NodeFirewallSpec, k int) (int, []string, error) {
	v4, _ := reference.IPTablesRestore(spec, iptablesOptions())
	want := spec.Rules[k].Policy + "/" + spec.Rules[k].Name
	pos := 0
	for _, line := range strings.Split(v4, "\n") {
		if !strings.HasPrefix(line, "-A INPUT ") {
			continue
		}
		pos++
		args := splitArgs(strings.TrimPrefix(line, "-A INPUT "))
		for i, a := range args {
			if a == "--comment" && i+1 < len(args) && args[i+1] == want {
				return pos, args, nil
			}
		}
	}
	return 0, nil, fmt.Errorf("rule %s not in the iptables rendering", want)
}

// splitArgs splits an iptables-restore line into arguments, unquoting
// double-quoted ones.
func splitArgs(line string) []string {
	var out []string
	var cur strings.Builder
	quoted, has := false, false
	for _, c := range line {
		switch {
		case c == '"':
			quoted, has = !quoted, true
		case c == ' ' && !quoted:
			if has {
				out = append(out, cur.String())
				cur.Reset()
				has = false
			}
		default:
			cur.WriteRune(c)
			has = true
		}
	}
	if has {
		out = append(out, cur.String())
	}
	return out
}

// workerEnv asks the test binary, run again as a child, to apply a
// benchmark ruleset and exit: "<namespace path> <rules>".
const workerEnv = "NODEFW_BENCH_APPLY"

// TestMain lets the test binary double as the child process of
// benchMemory: with workerEnv set it applies a ruleset and exits.
func TestMain(m *testing.M) {
	if arg := os.Getenv(workerEnv); arg != "" {
		if err := applyWorker(arg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// applyWorker builds the spec an agent would get, compiles and applies it,
// as an agent does, and prints its peak RSS.
func applyWorker(arg string) error {
	path, count, _ := strings.Cut(arg, " ")
	n, err := strconv.Atoi(count)
	if err != nil {
		return err
	}
	p, err := nft.New(path, "")
	if err != nil {
		return err
	}
	defer p.Close()
	if _, _, err := oursApply(p, benchSpec(n)); err != nil {
		return err
	}
	rs, err := compile.Compile(benchSpec(n), options())
	if err != nil {
		return err
	}
	if d, err := p.Drift(rs); err != nil || d != "" {
		return fmt.Errorf("Drift = %q, %v", d, err)
	}
	// The parent reads the peak from here: the last moments of a process
	// can escape its polling.
	fmt.Printf("peak %d kB\n", vmHWM("/proc/self/status"))
	return nil
}

func mustCompile(t *testing.T, spec v1alpha1.NodeFirewallSpec) *compile.Ruleset {
	t.Helper()
	rs, err := compile.Compile(spec, options())
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// benchMemory measures the peak RSS of a process that applies
// cfg.memRules rules and checks them, against iptables-nft-restore's.
func benchMemory(t *testing.T, r *report) {
	n := r.cfg.memRules
	oursNS, iptNS := netnstest.NewNS(t, "ours"), netnstest.NewNS(t, "ipt")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var ours, peer []int64
	for range r.cfg.reps {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), workerEnv+"="+oursNS.Path()+" "+strconv.Itoa(n))
		var output bytes.Buffer
		cmd.Stdout, cmd.Stderr = &output, &output
		peak, err := peakRSS(cmd)
		if err != nil {
			t.Fatalf("apply worker: %v\n%s", err, output.String())
		}
		var reported int64
		for _, l := range strings.Split(output.String(), "\n") {
			if v, ok := strings.CutPrefix(l, "peak "); ok {
				reported, _ = strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
			}
		}
		if reported == 0 {
			t.Fatalf("apply worker reported no peak:\n%s", output.String())
		}
		ours = append(ours, max(peak, reported))

		if err := clearIptables(iptNS); err != nil {
			t.Fatal(err)
		}
		_, rss, err := iptablesRestore(iptNS, benchSpec(n))
		if err != nil {
			t.Fatal(err)
		}
		peer = append(peer, rss)
	}
	o, i := float64(median(ours))/1024, float64(median(peer))/1024
	r.add(row{
		figure: fmt.Sprintf("peak RSS applying %s rules", thousands(n)),
		ours:   fmt.Sprintf("%.1f MiB", o), peer: fmt.Sprintf("%.1f MiB", i),
		ratio: fmt.Sprintf("%.2f", o/i), goal: "≤ 64 MiB", result: verdict(o <= 64),
	})
	r.note("Memory: peak RSS (VmHWM) of a process that builds the spec, compiles it, applies it over netlink and " +
		"reads it back (Drift), as the agent does, in a test binary rather than the agent (no Kubernetes client); " +
		"peer: the larger peak RSS of iptables-nft-restore and ip6tables-nft-restore loading the same rules (their " +
		"rendering into text happens in the benchmark's process and is not counted).")
}
