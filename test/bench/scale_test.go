package bench

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// scaleRun is what the agent tests' TestRulesThroughTheAPI measured: rules
// in policies of 500 rules created through the API server until the node's
// status reports them applied, the agent binary's peak RSS, and the
// new-flow rate through the rules over that of a host without any.
type scaleRun struct {
	rules, policies int
	ready           time.Duration
	vmHWMKiB        int
	flowRatio       float64
}

// readScale finds the SCALE lines TestRulesThroughTheAPI prints.
func readScale(path string) ([]scaleRun, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []scaleRun
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if !strings.HasPrefix(line, "SCALE ") {
			continue
		}
		var r scaleRun
		var readyMs int64
		if _, err := fmt.Sscanf(line, "SCALE rules=%d policies=%d ready_ms=%d agent_vmhwm_kib=%d flow_ratio=%f",
			&r.rules, &r.policies, &readyMs, &r.vmHWMKiB, &r.flowRatio); err != nil {
			return nil, fmt.Errorf("%s: %q: %w", path, line, err)
		}
		r.ready = time.Duration(readyMs) * time.Millisecond
		out = append(out, r)
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no SCALE line (did TestRulesThroughTheAPI pass?)", path)
	}
	return out, nil
}

// benchScale adds the end-to-end figures `make bench` measured just before.
func benchScale(t *testing.T, r *report, path string) {
	runs, err := readScale(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range runs {
		goal, pass := "—", "—"
		if s.rules == 10000 {
			goal, pass = "≤ 10 s", verdict(s.ready <= 10*time.Second)
		}
		r.add(row{
			figure: fmt.Sprintf("through the API: %s rules in %d policies on one node, creation to applied", thousands(s.rules), s.policies),
			ours:   fmt.Sprintf("%.1f s", s.ready.Seconds()), peer: "—", ratio: "—", goal: goal, result: pass,
		})
		r.add(row{
			figure: fmt.Sprintf("through the API: new-flow rate at %s rules, ratio vs no rules", thousands(s.rules)),
			ours:   fmt.Sprintf("%.2f", s.flowRatio), peer: "—", ratio: "—", goal: "≥ 0.90", result: verdict(s.flowRatio >= 0.90),
		})
		goal, pass = "—", "—"
		if s.rules == 10000 {
			goal, pass = "≤ 64 MiB", verdict(s.vmHWMKiB <= 64*1024)
		}
		r.add(row{
			figure: fmt.Sprintf("through the API: agent process peak RSS (VmHWM) at %s rules", thousands(s.rules)),
			ours:   fmt.Sprintf("%.1f MiB", float64(s.vmHWMKiB)/1024), peer: "—", ratio: "—", goal: goal, result: pass,
		})
	}
	r.note("Through the API: `TestRulesThroughTheAPI` of test/agent (NODEFW_SCALE_RULES), run by `make bench` before this " +
		"benchmark: policies of 500 rules (one TCP port from one /32 source each) created through a local API server, " +
		"resolved by the controller in the test's process into revisions and one NodeFirewall naming them, applied by " +
		"the real bin/agent process into a network namespace; the time runs from the first policy's creation to the " +
		"NodeFirewall's Ready condition at its generation listing every policy. The new-flow rate is that of TCP connections " +
		"to a port the last rule accepts, through the applied rules, over that of a host without any, medians of interleaved " +
		"rounds; the peak RSS is the agent process's VmHWM, read before the flows.")
}

func TestReadScale(t *testing.T) {
	path := t.TempDir() + "/scale.log"
	log := "SCALE rules=10000 policies=20 ready_ms=6500 agent_vmhwm_kib=60000 flow_ratio=0.970\nok\n" +
		"SCALE rules=50000 policies=100 ready_ms=30000 agent_vmhwm_kib=150000 flow_ratio=0.950\n"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readScale(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []scaleRun{{10000, 20, 6500 * time.Millisecond, 60000, 0.97}, {50000, 100, 30 * time.Second, 150000, 0.95}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("readScale = %+v, want %+v", got, want)
	}
	if err := os.WriteFile(path, []byte("--- FAIL\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readScale(path); err == nil {
		t.Error("a log without a SCALE line was accepted")
	}
}
