package bench

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nodefw/nodefw/controllers"
)

// fanOut is what the controllers package's TestFanOut measured in envtest:
// one policy change touching `touched` of `nodes` nodes, with simulated
// agents acknowledging in NodeFirewall.status.
type fanOut struct {
	nodes, touched, nfwUpdates, policyStatusUpdates, writes int
	ready                                                   time.Duration
	// Request bytes the controller sent for the change, counted on the
	// wire: NodeFirewall updates, revisions created, policy status
	// patches, and all else (Events, deletes); and the size of the edited
	// policy itself.
	policyBytes, nfwBytes, revisionBytes, policyStatusBytes, otherBytes int
}

// readFanOut finds the FANOUT line TestFanOut prints in its output.
func readFanOut(path string) (fanOut, error) {
	f, err := os.Open(path)
	if err != nil {
		return fanOut{}, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if !strings.HasPrefix(line, "FANOUT ") {
			continue
		}
		var fo fanOut
		var readyMs int64
		if _, err := fmt.Sscanf(line, "FANOUT nodes=%d touched=%d ready_ms=%d nfw_updates=%d policy_status_updates=%d writes=%d policy_bytes=%d nfw_bytes=%d revision_bytes=%d policy_status_bytes=%d other_bytes=%d",
			&fo.nodes, &fo.touched, &readyMs, &fo.nfwUpdates, &fo.policyStatusUpdates, &fo.writes,
			&fo.policyBytes, &fo.nfwBytes, &fo.revisionBytes, &fo.policyStatusBytes, &fo.otherBytes); err != nil {
			return fanOut{}, fmt.Errorf("%s: %q: %w", path, line, err)
		}
		fo.ready = time.Duration(readyMs) * time.Millisecond
		return fo, nil
	}
	if err := s.Err(); err != nil {
		return fanOut{}, err
	}
	return fanOut{}, fmt.Errorf("%s: no FANOUT line (did TestFanOut pass?)", path)
}

// benchFanOut adds the fan-out figures `make bench` measured just before.
func benchFanOut(t *testing.T, r *report, path string) {
	fo, err := readFanOut(path)
	if err != nil {
		t.Fatal(err)
	}
	r.add(row{
		figure: fmt.Sprintf("fan-out: one policy change touching %s of %s nodes, until the policy is Ready",
			thousands(fo.touched), thousands(fo.nodes)),
		ours: fmt.Sprintf("%.1f s", fo.ready.Seconds()), peer: "—", ratio: "—", goal: "≤ 10 s",
		result: verdict(fo.ready <= 10*time.Second),
	})
	r.add(row{
		figure: "fan-out: controller writes",
		ours: fmt.Sprintf("%d in all: %d NodeFirewall updates, %d policy status patches",
			fo.writes, fo.nfwUpdates, fo.policyStatusUpdates),
		peer: "—", ratio: "—", goal: "no NodeFirewall write for a change of a followed policy's rules",
		result: verdict(fo.nfwUpdates == 0),
	})
	perNode := 0
	if fo.touched > 0 {
		perNode = fo.nfwBytes / fo.touched
	}
	r.add(row{
		figure: fmt.Sprintf("fan-out: bytes sent for one edit of a 500-rule policy (%s bytes) selecting %s of %s nodes",
			thousands(fo.policyBytes), thousands(fo.touched), thousands(fo.nodes)),
		ours: fmt.Sprintf("%s B in all: revision %s B once; NodeFirewalls %s B (%d B a node); policy status %s B; Events and deletes %s B",
			thousands(fo.totalBytes()), thousands(fo.revisionBytes), thousands(fo.nfwBytes), perNode, thousands(fo.policyStatusBytes), thousands(fo.otherBytes)),
		peer: "—", ratio: "—", goal: "the policy once plus ≤ 1 KiB per node",
		result: verdict(fo.totalBytes() <= fo.policyBytes+1024*fo.touched),
	})
	r.note("Fan-out: `TestFanOut` of the controllers package in envtest (NODEFW_FANOUT_NODES=%d), run by "+
		"`make bench` before this benchmark: simulated agents acknowledge every new NodeFirewall generation, and "+
		"every revision labelled current of a policy they follow, in its status; half of the nodes have a policy, "+
		"which they follow, whose rules then change. The test itself fails if the controller writes a NodeFirewall. The controller runs with the manager's defaults: the client's QPS and burst "+
		"(`--kube-api-qps` %d, `--kube-api-burst` %d) and the parallel writes (`--write-concurrency` %d). Bytes are the "+
		"request bodies the controller's client sent, counted by a wrapper of its HTTP transport.",
		fo.nodes, controllers.DefaultKubeAPIQPS, controllers.DefaultKubeAPIBurst, controllers.DefaultWriteConcurrency)
}

// totalBytes is every request byte the controller sent for the change.
func (fo fanOut) totalBytes() int {
	return fo.nfwBytes + fo.revisionBytes + fo.policyStatusBytes + fo.otherBytes
}

func TestReadFanOut(t *testing.T) {
	path := t.TempDir() + "/fanout.log"
	log := "=== RUN   TestFanOut\nFANOUT nodes=2000 touched=1000 ready_ms=12345 nfw_updates=1000 policy_status_updates=30 writes=1030 policy_bytes=50000 nfw_bytes=600000 revision_bytes=45000 policy_status_bytes=1500 other_bytes=700\n--- PASS\n"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readFanOut(path)
	if err != nil {
		t.Fatal(err)
	}
	want := fanOut{nodes: 2000, touched: 1000, nfwUpdates: 1000, policyStatusUpdates: 30, writes: 1030, ready: 12345 * time.Millisecond,
		policyBytes: 50000, nfwBytes: 600000, revisionBytes: 45000, policyStatusBytes: 1500, otherBytes: 700}
	if got != want {
		t.Errorf("readFanOut = %+v, want %+v", got, want)
	}
	if err := os.WriteFile(path, []byte("--- FAIL: TestFanOut\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readFanOut(path); err == nil {
		t.Error("a log without the FANOUT line was accepted")
	}
}
