package diff

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/nodefw/nodefw/internal/netnstest"
)

var (
	seedFlag     = flag.Uint64("diff.seed", 1, "seed of the random rule sets; set i uses (seed, i)")
	countFlag    = flag.Int("diff.count", 50, "number of random rule sets")
	onlyFlag     = flag.Int("diff.set", -1, "run only random rule set i (with -diff.seed), to reproduce a mismatch")
	timeoutFlag  = flag.Duration("diff.timeout", 200*time.Millisecond, "how long a probe waits before it counts as dropped")
	confirmFlag  = flag.Duration("diff.confirm-timeout", time.Second, "probe timeout when a mismatch is checked again")
	parallelFlag = flag.Int("diff.parallel", 96, "probes in flight per router")
	shrinkFlag   = flag.Int("diff.shrink", 3, "rule sets with mismatches to shrink to a minimal reproducer")
)

// tools are the programs the tests run.
var tools = []string{"ip", "iptables-nft-restore", "ip6tables-nft-restore"}

var (
	topoOnce sync.Once
	topo     *topology
	topoErr  error
)

// env returns the shared topology, building it on first use. It fails the
// test, rather than skipping it, when the test cannot run here.
func env(t *testing.T) *topology {
	t.Helper()
	if uid := os.Geteuid(); uid != 0 {
		t.Fatalf("test/diff loads firewall rules into network namespaces and must run as root, not uid %d: "+
			"run it with sudo or in a privileged container", uid)
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("test/diff needs %s in PATH (packages iproute2 and iptables): %v", tool, err)
		}
	}
	topoOnce.Do(func() {
		// The namespaces of killed runs never clash with this run's, which
		// carry its process ID: deleting them only tidies up.
		_, _ = netnstest.DeleteOrphaned(nsPrefix)
		topo, topoErr = newTopology()
	})
	if topoErr != nil {
		t.Fatalf("building the topology: %v", topoErr)
	}
	return topo
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if topo != nil {
		if err := topo.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "closing the topology:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}
