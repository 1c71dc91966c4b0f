package bench

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// fleet is what test/fleet's TestLargeCluster measured: the manager
// process on a cluster of `nodes` nodes and `policies` policies in envtest,
// with simulated agents.
type fleet struct {
	nodes, policies, refs int
	// initial is from the manager's start to every policy Ready;
	// createPass the manager's pass that created every NodeFirewall.
	initial, createPass time.Duration
	// changeReady is from the edit of the policy selecting every node to
	// every policy Ready; updatePass the pass that wrote every NodeFirewall.
	changeReady, updatePass time.Duration
	// hwmKiB is the manager process's peak RSS (VmHWM).
	hwmKiB int
}

// readFleet finds the FLEET line TestLargeCluster prints.
func readFleet(path string) (fleet, error) {
	f, err := os.Open(path)
	if err != nil {
		return fleet{}, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if !strings.HasPrefix(line, "FLEET ") {
			continue
		}
		var fl fleet
		var initial, create, change, update int64
		if _, err := fmt.Sscanf(line, "FLEET nodes=%d policies=%d refs=%d initial_ms=%d create_pass_ms=%d change_ready_ms=%d update_pass_ms=%d manager_hwm_kib=%d",
			&fl.nodes, &fl.policies, &fl.refs, &initial, &create, &change, &update, &fl.hwmKiB); err != nil {
			return fleet{}, fmt.Errorf("%s: %q: %w", path, line, err)
		}
		fl.initial, fl.createPass = time.Duration(initial)*time.Millisecond, time.Duration(create)*time.Millisecond
		fl.changeReady, fl.updatePass = time.Duration(change)*time.Millisecond, time.Duration(update)*time.Millisecond
		return fl, nil
	}
	if err := s.Err(); err != nil {
		return fleet{}, err
	}
	return fleet{}, fmt.Errorf("%s: no FLEET line (did TestLargeCluster pass?)", path)
}

// benchFleet adds the large-cluster figures `make bench` measured before.
func benchFleet(t *testing.T, r *report, path string) {
	fl, err := readFleet(path)
	if err != nil {
		t.Fatal(err)
	}
	size := fmt.Sprintf("%s nodes × %s policies", thousands(fl.nodes), thousands(fl.policies))
	r.add(row{
		figure: size + ": the manager's pass creating every NodeFirewall; every policy Ready from its start",
		ours:   fmt.Sprintf("%.1f s; %.1f s", fl.createPass.Seconds(), fl.initial.Seconds()), peer: "—", ratio: "—", goal: "—", result: "—",
	})
	r.add(row{
		figure: size + ": the manager's longest pass after one edit (the nodes follow the policy: no NodeFirewall written)",
		ours:   fmt.Sprintf("%.1f s", fl.updatePass.Seconds()), peer: "—", ratio: "—", goal: "—", result: "—",
	})
	r.add(row{
		figure: size + ": one edit touching every node, until every policy is Ready",
		ours:   fmt.Sprintf("%.1f s", fl.changeReady.Seconds()), peer: "—", ratio: "—", goal: "≤ 60 s",
		result: verdict(fl.changeReady <= 60*time.Second),
	})
	r.add(row{
		figure: size + ": the manager process's peak RSS (VmHWM)",
		ours:   fmt.Sprintf("%.1f MiB", float64(fl.hwmKiB)/1024), peer: "—", ratio: "—", goal: "—", result: "—",
	})
	r.note("Large cluster: `TestLargeCluster` of test/fleet in envtest (NODEFW_FLEET_NODES=%d NODEFW_FLEET_POLICIES=%d), "+
		"run by `make bench` before this benchmark: bin/manager as its own process with its default flags, simulated agents "+
		"acknowledging every NodeFirewall generation and every revision labelled current of a policy they follow; the nodes and policies exist before the manager starts (%s policy "+
		"references on the nodes in all). The passes' times are the manager's own (its debug log's `resolved` lines: "+
		"listing from its cache, resolving, writing, statuses); the edit changes the rules of the one policy that selects every node.",
		fl.nodes, fl.policies, thousands(fl.refs))
}

func TestReadFleet(t *testing.T) {
	path := t.TempDir() + "/fleet.log"
	log := "=== RUN   TestLargeCluster\nFLEET nodes=5000 policies=1000 refs=180000 initial_ms=40000 create_pass_ms=30000 change_ready_ms=35000 update_pass_ms=25000 manager_hwm_kib=300000\n--- PASS\n"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readFleet(path)
	if err != nil {
		t.Fatal(err)
	}
	want := fleet{nodes: 5000, policies: 1000, refs: 180000, initial: 40 * time.Second, createPass: 30 * time.Second,
		changeReady: 35 * time.Second, updatePass: 25 * time.Second, hwmKiB: 300000}
	if got != want {
		t.Errorf("readFleet = %+v, want %+v", got, want)
	}
	if err := os.WriteFile(path, []byte("--- FAIL: TestLargeCluster\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readFleet(path); err == nil {
		t.Error("a log without the FLEET line was accepted")
	}
}
