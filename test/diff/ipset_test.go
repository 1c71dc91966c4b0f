package diff

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/importer"
	"github.com/nodefw/nodefw/internal/policytest"
	"github.com/nodefw/nodefw/internal/resolve"
)

var ipsetCountFlag = flag.Int("diff.ipset-count", 16, "number of random rule sets with ipset sets")

// The entries of the random ipset sets: the probes' addresses, networks
// around them, and networks no probe is in. hash:ip sets take the
// addresses only.
var (
	ipsetAddrsV4 = []string{"10.77.1.10", "10.77.1.11", "10.77.1.12", "10.77.1.13", "10.244.1.10",
		"10.77.2.10", "10.77.2.20", "10.244.2.10", "10.77.1.1", "10.77.2.1", "192.0.2.7"}
	ipsetNetsV4 = []string{"10.77.1.10/31", "10.77.1.12/30", "10.77.1.8/29", "10.77.1.0/24", "10.77.2.0/24",
		"10.77.2.16/28", "10.77.0.0/16", "10.244.0.0/16", "10.244.1.0/24", "10.0.0.0/8", "192.0.2.0/24"}
	ipsetAddrsV6 = []string{"fd77:1::10", "fd77:1::11", "fd77:2::10", "fd77:1::1", "fd77:2::1", "2001:db8::7"}
	ipsetNetsV6  = []string{"fd77:1::10/127", "fd77:1::8/125", "fd77:1::/64", "fd77:2::/64", "fd77::/16", "2001:db8::/32"}
)

// ipsetPorts are the destination ports of the random rules and probes.
var ipsetPorts = []uint16{4000, 4001, 4002, 4003}

// ipsetCase is a random ruleset in iptables' terms: ipset sets and the
// rules of both families that look them up.
type ipsetCase struct {
	ipset  string
	v4, v6 string
}

// randomIPSetCase draws two to four sets of each family, hash:ip or
// hash:net, the latter with nomatch entries half the time (some inside an
// entry, some holding one, which matches again), and rules that look them
// up on their source or destination, or both, in every chain, with the
// same default policies in both families. Every rule of a family names a
// set of that family, so that the import, whose rules without addresses
// would apply to both families, keeps each rule to its own; the
// conntrack and loopback accepts nodefw makes anyway come first in every
// chain, and ICMPv6 is accepted for neighbour discovery.
func randomIPSetCase(rng *rand.Rand) ipsetCase {
	var sets strings.Builder
	names := map[string][]string{}
	for _, fam := range []struct {
		v6           bool
		addrs, nets  []string
		family, name string
	}{{false, ipsetAddrsV4, ipsetNetsV4, "inet", "v4"}, {true, ipsetAddrsV6, ipsetNetsV6, "inet6", "v6"}} {
		for i := range 2 + rng.IntN(3) {
			kind := "hash:ip"
			pool := slices.Clone(fam.addrs)
			if rng.IntN(3) > 0 {
				kind = "hash:net"
				pool = append(pool, fam.nets...)
			}
			name := fmt.Sprintf("%s-%s-%d", fam.name, strings.TrimPrefix(kind, "hash:"), i)
			names[fam.name] = append(names[fam.name], name)
			fmt.Fprintf(&sets, "create %s %s family %s hashsize 1024 maxelem 65536\n", name, kind, fam.family)
			rng.Shuffle(len(pool), func(a, b int) { pool[a], pool[b] = pool[b], pool[a] })
			n := 1 + rng.IntN(4)
			for _, e := range pool[:n] {
				fmt.Fprintf(&sets, "add %s %s\n", name, e)
			}
			if kind == "hash:net" && rng.IntN(2) == 0 {
				for _, e := range pool[n : n+1+rng.IntN(3)] {
					fmt.Fprintf(&sets, "add %s %s nomatch\n", name, e)
				}
			}
		}
	}
	policies := [3]string{}
	for i := range policies {
		policies[i] = []string{"ACCEPT", "DROP"}[rng.IntN(2)]
	}
	rules := func(fam string) string {
		var b strings.Builder
		b.WriteString("*filter\n")
		for i, chain := range []string{"INPUT", "FORWARD", "OUTPUT"} {
			fmt.Fprintf(&b, ":%s %s [0:0]\n", chain, policies[i])
		}
		for _, chain := range []string{"INPUT", "FORWARD", "OUTPUT"} {
			fmt.Fprintf(&b, "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n", chain)
		}
		b.WriteString("-A INPUT -i lo -j ACCEPT\n-A OUTPUT -o lo -j ACCEPT\n")
		if fam == "v6" {
			b.WriteString("-A INPUT -p ipv6-icmp -j ACCEPT\n-A OUTPUT -p ipv6-icmp -j ACCEPT\n")
		}
		set := func() string { return names[fam][rng.IntN(len(names[fam]))] }
		for range 3 + rng.IntN(8) {
			chain := []string{"INPUT", "FORWARD", "OUTPUT"}[rng.IntN(3)]
			proto := []string{"tcp", "udp"}[rng.IntN(2)]
			fmt.Fprintf(&b, "-A %s -p %s", chain, proto)
			if rng.IntN(3) > 0 {
				fmt.Fprintf(&b, " -m %s --dport %d", proto, ipsetPorts[rng.IntN(len(ipsetPorts))])
			}
			switch rng.IntN(3) {
			case 0:
				fmt.Fprintf(&b, " -m set --match-set %s src", set())
			case 1:
				fmt.Fprintf(&b, " -m set --match-set %s dst", set())
			default:
				fmt.Fprintf(&b, " -m set --match-set %s src -m set --match-set %s dst", set(), set())
			}
			fmt.Fprintf(&b, " -j %s\n", []string{"ACCEPT", "DROP", "REJECT"}[rng.IntN(3)])
		}
		b.WriteString("COMMIT\n")
		return b.String()
	}
	return ipsetCase{ipset: sets.String(), v4: rules("v4"), v6: rules("v6")}
}

// TestIPSetRuleSets loads random rulesets that look up ipset sets
// (`-m set --match-set NAME src|dst`, hash:ip and hash:net, IPv4 and
// IPv6, nomatch entries included) into iptables and ipset on one side,
// and, imported with `nodefw import --ipset`, into nodefw on the other:
// each family's iptables-save text a policy, the sets
// NodeFirewallAddressSets that the rules' peers look up. Every probe
// must get the same verdict, and the trace the agent's.
//
//	go test ./test/diff/ -run TestIPSetRuleSets -diff.seed=7 -diff.ipset-count=100
func TestIPSetRuleSets(t *testing.T) {
	tp := env(t)
	if _, err := exec.LookPath("ipset"); err != nil {
		t.Fatalf("TestIPSetRuleSets needs ipset in PATH (package ipset; make deps installs it): %v", err)
	}
	seed := *seedFlag
	start := time.Now()
	var st stats
	// How the sets with nomatch entries were imported: as the peers'
	// except, or carved out of the set's addresses.
	var excepts, carved int
	ps := pairs(true)
	for i := range *ipsetCountFlag {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		ic := randomIPSetCase(rng)
		name := fmt.Sprintf("ipset set %d (-diff.seed=%d)", i, seed)
		c, warnings := importIPSetCase(t, name, ic)
		for _, w := range warnings {
			switch {
			case w.Source != importer.SourceIPSet:
			case strings.Contains(w.Reason, "as the peer's except"):
				excepts++
			case strings.Contains(w.Reason, "has nomatch entries ("):
				carved++
			}
		}
		tp.check(t, c, matrix(ps, ipsetPorts, ipsetPorts), &st)
	}
	t.Logf("%v, in %v; sets with nomatch entries imported as except: %d, carved out: %d", &st, time.Since(start).Round(time.Millisecond), excepts, carved)
}

// importIPSetCase imports both families' rules with the sets and resolves
// them for a node, as the controller and the agent would. It returns the
// warnings of the IPv4 import, the ipset file's among them.
func importIPSetCase(t *testing.T, name string, ic ipsetCase) (*ruleCase, []importer.Warning) {
	t.Helper()
	var policies []v1alpha1.NodeFirewallPolicy
	var sets []v1alpha1.NodeFirewallAddressSet
	var warnings []importer.Warning
	texts := map[string]string{}
	for _, fam := range []struct{ name, text string }{{"v4", ic.v4}, {"v6", ic.v6}} {
		res, err := importer.Import(strings.NewReader(fam.text), importer.Options{Name: "ipset-" + fam.name, IPSet: strings.NewReader(ic.ipset)})
		if err != nil {
			t.Fatal(err)
		}
		if res.Summary.Skipped > 0 || res.Summary.Changed > 0 || res.Summary.Differences > 0 {
			t.Fatalf("%s: the %s rules are not imported exactly: %v\n%v\n--- iptables-save\n%s--- ipset save\n%s",
				name, fam.name, res.Summary, res.Warnings, fam.text, ic.ipset)
		}
		texts[fam.name] = importedOnly(fam.text, res.SkippedLines)
		policies = append(policies, *res.Policy)
		if sets == nil {
			warnings = res.Warnings
			for _, s := range res.AddressSets {
				sets = append(sets, *s)
			}
		}
	}
	node := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node", Labels: map[string]string{"kubernetes.io/hostname": "node"}}}
	resolved := resolve.Resolve(resolve.Input{Policies: policies, Nodes: []corev1.Node{node}})
	contents, problems, err := policytest.AddressSetsFor(policies, []corev1.Node{node}, sets)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append(resolved.Problems, problems...) {
		t.Errorf("%s: resolving: %s: %s: %s", name, p.Policy, p.Reason, p.Message)
	}
	return &ruleCase{name: name, spec: resolved.Nodes[node.Name], v4: texts["v4"], v6: texts["v6"], ipset: ic.ipset, addressSets: contents}, warnings
}
