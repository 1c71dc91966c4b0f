package cluster

import (
	"context"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/internal/localcluster"
)

// nodefwTable is nodefw's table, as `nft list tables` names it.
const nodefwTable = "table inet nodefw"

// snapshotTables returns, per node, every nftables table but nodefw's as
// `nft -s list table` prints it: kube-proxy's own table in nftables mode,
// and the iptables-nft tables of kube-proxy in iptables mode, flannel, the
// kubelet and the portmap plugin. Stateless (-s): counters go up with
// traffic, the rules must not change. The per-service rules of
// kube-proxy's iptables mode are put in order (inServiceOrder), and empty
// chains left out (withoutEmptyChains).
func snapshotTables(t *testing.T, ctx context.Context, c *localcluster.Cluster) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range c.Nodes {
		list, err := n.Exec(ctx, "nft", "list", "tables")
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, table := range strings.Split(strings.TrimSpace(list), "\n") {
			f := strings.Fields(table) // table FAMILY NAME
			if table == nodefwTable || len(f) != 3 {
				continue
			}
			rules, err := n.Exec(ctx, "nft", "-s", "list", "table", f[1], f[2])
			if err != nil {
				t.Fatal(err)
			}
			b.WriteString(withoutEmptyChains(inServiceOrder(rules)))
		}
		out[n.Name] = b.String()
	}
	return out
}

// kubeProxyServiceChains are the chains kube-proxy's iptables mode writes
// with one rule per service port, in Go map order, at every sync.
var kubeProxyServiceChains = []string{"KUBE-SERVICES", "KUBE-NODEPORTS"}

// inServiceOrder sorts the per-service rules (those jumping to a
// KUBE-SVC- or KUBE-EXT- chain) of kubeProxyServiceChains among
// themselves, leaving every other line where it is. Their order carries
// no meaning, as each matches its own address and port, and kube-proxy
// changes it whenever it syncs; everything else must stay byte for byte.
func inServiceOrder(listing string) string {
	lines := strings.Split(listing, "\n")
	inChain := false
	var idx []int
	flush := func() {
		var rules []string
		for _, i := range idx {
			rules = append(rules, lines[i])
		}
		sort.Strings(rules)
		for k, i := range idx {
			lines[i] = rules[k]
		}
		idx = idx[:0]
	}
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "chain "):
			name := strings.TrimSuffix(strings.TrimPrefix(trimmed, "chain "), " {")
			inChain = slices.Contains(kubeProxyServiceChains, name)
		case trimmed == "}":
			flush()
			inChain = false
		case inChain && (strings.Contains(line, "jump KUBE-SVC-") || strings.Contains(line, "jump KUBE-EXT-")):
			idx = append(idx, i)
		}
	}
	return strings.Join(lines, "\n")
}

// withoutEmptyChains is listing without its chains that have no rule and
// no hook. Such a chain does nothing (a jump to it is a rule, which is
// compared), and kube-proxy's nftables mode leaves one behind for every
// removed Service: it flushes the Service's chains at once and deletes
// them at a sync at least a second later, which runs only when a Service
// or an endpoint changes again (its periodic full sync is hourly).
func withoutEmptyChains(listing string) string {
	lines := strings.Split(listing, "\n")
	out := make([]string, 0, len(lines))
	for i := 0; i < len(lines); i++ {
		if strings.HasPrefix(strings.TrimSpace(lines[i]), "chain ") && i+1 < len(lines) && strings.TrimSpace(lines[i+1]) == "}" {
			// Its blank separator line goes with it.
			if n := len(out); n > 0 && strings.TrimSpace(out[n-1]) == "" {
				out = out[:n-1]
			}
			i++
			continue
		}
		out = append(out, lines[i])
	}
	return strings.Join(out, "\n")
}

// compareTables fails the test when a node's tables differ.
func compareTables(t *testing.T, want, got map[string]string) {
	t.Helper()
	for node, w := range want {
		if d := cmp.Diff(w, got[node]); d != "" {
			t.Errorf("%s: kube-proxy's, flannel's and the kubelet's tables changed (-before +after):\n%s", node, d)
		}
	}
}

// eventuallySameTables waits until every node's tables are want again, for
// after a change kube-proxy takes its time over (a removed Service's
// chains go at a later sync), and fails the test with the last difference
// at timeout.
func eventuallySameTables(t *testing.T, ctx context.Context, c *localcluster.Cluster, want map[string]string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := snapshotTables(t, ctx, c)
		if cmp.Equal(want, got) || time.Now().After(deadline) {
			compareTables(t, want, got)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// hasNodefwTable reports whether the node has nodefw's table.
func hasNodefwTable(ctx context.Context, n *localcluster.Node) (bool, error) {
	list, err := n.Exec(ctx, "nft", "list", "tables")
	if err != nil {
		return false, err
	}
	for _, table := range strings.Split(list, "\n") {
		if strings.TrimSpace(table) == nodefwTable {
			return true, nil
		}
	}
	return false, nil
}

func TestInServiceOrder(t *testing.T) {
	in := `table ip nat {
	chain KUBE-SERVICES {
		meta l4proto udp ip daddr 10.96.148.144  udp dport 8081 counter jump KUBE-SVC-FGHE7AUHC67SO3PX
		meta l4proto tcp ip daddr 10.96.0.1  tcp dport 443 counter jump KUBE-SVC-NPX46M4PTMTKRN6Y
		ip daddr 172.30.80.11  counter jump KUBE-NODEPORTS
	}

	chain KUBE-NODEPORTS {
		meta l4proto tcp  tcp dport 30090 counter jump KUBE-EXT-Q3NKQ6TVFMBEIJPK
		meta l4proto udp  udp dport 30081 counter jump KUBE-EXT-FGHE7AUHC67SO3PX
	}

	chain KUBE-SVC-NPX46M4PTMTKRN6Y {
		meta l4proto tcp ip saddr != 10.244.0.0/16 ip daddr 10.96.0.1  tcp dport 443 counter jump KUBE-MARK-MASQ
		counter jump KUBE-SEP-A
		counter jump KUBE-SEP-B
	}
}
`
	want := `table ip nat {
	chain KUBE-SERVICES {
		meta l4proto tcp ip daddr 10.96.0.1  tcp dport 443 counter jump KUBE-SVC-NPX46M4PTMTKRN6Y
		meta l4proto udp ip daddr 10.96.148.144  udp dport 8081 counter jump KUBE-SVC-FGHE7AUHC67SO3PX
		ip daddr 172.30.80.11  counter jump KUBE-NODEPORTS
	}

	chain KUBE-NODEPORTS {
		meta l4proto tcp  tcp dport 30090 counter jump KUBE-EXT-Q3NKQ6TVFMBEIJPK
		meta l4proto udp  udp dport 30081 counter jump KUBE-EXT-FGHE7AUHC67SO3PX
	}

	chain KUBE-SVC-NPX46M4PTMTKRN6Y {
		meta l4proto tcp ip saddr != 10.244.0.0/16 ip daddr 10.96.0.1  tcp dport 443 counter jump KUBE-MARK-MASQ
		counter jump KUBE-SEP-A
		counter jump KUBE-SEP-B
	}
}
`
	if d := cmp.Diff(want, inServiceOrder(in)); d != "" {
		t.Errorf("inServiceOrder (-want +got):\n%s", d)
	}
}

func TestWithoutEmptyChains(t *testing.T) {
	listing := "table ip kube-proxy {\n\tchain services {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t}\n\n\tchain service-A {\n\t}\n\n\tchain service-B {\n\t\tjump endpoint-B\n\t}\n}\n"
	want := "table ip kube-proxy {\n\tchain services {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t}\n\n\tchain service-B {\n\t\tjump endpoint-B\n\t}\n}\n"
	if d := cmp.Diff(want, withoutEmptyChains(listing)); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
