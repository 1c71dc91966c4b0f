package importer

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// TestImportIPSetNomatch: nomatch entries of a hash:net set become the
// except of the peers naming the set when that is exact, and are carved
// out of the set's addresses otherwise.
func TestImportIPSetNomatch(t *testing.T) {
	tests := []struct {
		name      string
		rules     string
		ipsets    string
		wantRules []v1alpha1.Rule
		wantSets  []*v1alpha1.NodeFirewallAddressSet
		// wantWarning is the reason of the one note about the set.
		wantWarning string
	}{{
		name:   "except",
		rules:  "-A INPUT -m set --match-set blk src -j DROP\n",
		ipsets: "create blk hash:net family inet\nadd blk 10.0.0.0/8\nadd blk 10.1.0.0/16 nomatch\nadd blk 192.0.2.0/24\nadd blk 172.16.0.0/12 nomatch\nadd blk 10.9.9.9 nomatch\n",
		wantRules: []v1alpha1.Rule{{Name: "input-from-blk-drop", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop,
			From: []v1alpha1.Peer{{AddressSet: "blk", Except: []string{"10.1.0.0/16", "10.9.9.9"}}}}},
		wantSets:    []*v1alpha1.NodeFirewallAddressSet{addressSet("blk", "10.0.0.0/8", "192.0.2.0/24")},
		wantWarning: "set blk has nomatch entries: the NodeFirewallAddressSet holds its other entries, and every rule naming it carves [10.1.0.0/16 10.9.9.9] out as the peer's except; a reference written by hand needs the same except",
	}, {
		name:   "except on dst, IPv6",
		rules:  "-A OUTPUT -p tcp -m tcp --dport 443 -m set --match-set partners6 dst -j ACCEPT\n",
		ipsets: "create partners6 hash:net family inet6 hashsize 1024 maxelem 65536\nadd partners6 2001:db8::/32\nadd partners6 2001:db8:1::/48 nomatch\n",
		wantRules: []v1alpha1.Rule{{Name: "output-tcp-443-to-partners6", Chain: v1alpha1.ChainOutput, Action: v1alpha1.ActionAccept,
			Protocol: v1alpha1.ProtocolTCP, Ports: ports(443, 0), To: []v1alpha1.Peer{{AddressSet: "partners6", Except: []string{"2001:db8:1::/48"}}}}},
		wantSets:    []*v1alpha1.NodeFirewallAddressSet{addressSet("partners6", "2001:db8::/32")},
		wantWarning: "set partners6 has nomatch entries: the NodeFirewallAddressSet holds its other entries, and every rule naming it carves [2001:db8:1::/48] out as the peer's except; a reference written by hand needs the same except",
	}, {
		name:      "nomatch outside every entry",
		rules:     "-A INPUT -m set --match-set blk src -j DROP\n",
		ipsets:    "create blk hash:net family inet\nadd blk 10.0.0.0/8\nadd blk 192.168.0.0/16 nomatch\n",
		wantRules: []v1alpha1.Rule{{Name: "input-from-blk-drop", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop, From: []v1alpha1.Peer{{AddressSet: "blk"}}}},
		wantSets:  []*v1alpha1.NodeFirewallAddressSet{addressSet("blk", "10.0.0.0/8")},
	}, {
		name:      "an entry inside a nomatch entry",
		rules:     "-A INPUT -m set --match-set blk src -j DROP\n",
		ipsets:    "create blk hash:net family inet\nadd blk 10.0.0.0/8\nadd blk 10.1.0.0/16 nomatch\nadd blk 10.1.2.0/24\n",
		wantRules: []v1alpha1.Rule{{Name: "input-from-blk-drop", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop, From: []v1alpha1.Peer{{AddressSet: "blk"}}}},
		wantSets: []*v1alpha1.NodeFirewallAddressSet{addressSet("blk", "10.0.0.0/16", "10.1.2.0/24", "10.2.0.0/15", "10.4.0.0/14",
			"10.8.0.0/13", "10.16.0.0/12", "10.32.0.0/11", "10.64.0.0/10", "10.128.0.0/9")},
		wantWarning: "set blk has nomatch entries (entries inside them match again, which except cannot say): the NodeFirewallAddressSet holds the 9 CIDRs the set matches, without them",
	}, {
		name:  "more nomatch entries than a peer's except holds",
		rules: "-A INPUT -m set --match-set blk src -j DROP\n",
		ipsets: func() string {
			s := "create blk hash:net family inet\nadd blk 10.0.0.0/27\n"
			for i := range 17 {
				s += fmt.Sprintf("add blk 10.0.0.%d nomatch\n", i)
			}
			return s
		}(),
		wantRules: []v1alpha1.Rule{{Name: "input-from-blk-drop", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop, From: []v1alpha1.Peer{{AddressSet: "blk"}}}},
		// 10.0.0.0/27 less .0 to .16: .17, .18-.19, .20-.23, .24-.31.
		wantSets:    []*v1alpha1.NodeFirewallAddressSet{addressSet("blk", "10.0.0.17", "10.0.0.18/31", "10.0.0.20/30", "10.0.0.24/29")},
		wantWarning: "set blk has nomatch entries (more than the 16 except CIDRs of a peer): the NodeFirewallAddressSet holds the 4 CIDRs the set matches, without them",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Import(strings.NewReader(tt.rules), Options{IPSet: strings.NewReader(tt.ipsets)})
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, tt.rules, res)
			if d := cmp.Diff(tt.wantRules, res.Policy.Spec.Rules); d != "" {
				t.Errorf("rules (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.wantSets, res.AddressSets); d != "" {
				t.Errorf("address sets (-want +got):\n%s", d)
			}
			var want []Warning
			if tt.wantWarning != "" {
				want = []Warning{{Source: SourceIPSet, Line: 1, Text: strings.SplitN(tt.ipsets, "\n", 2)[0], Reason: tt.wantWarning, Exact: true}}
			}
			if d := cmp.Diff(want, withoutImplicitAcceptWarnings(res.Warnings)); d != "" {
				t.Errorf("warnings (-want +got):\n%s", d)
			}
			// Exact: a rule naming an imported set is no change.
			if res.Summary.Changed != 0 {
				t.Errorf("summary %+v: want the rule imported without change", res.Summary)
			}
		})
	}
}

// TestNomatchMatched compares nomatchMatched with ipset's lookup, address
// by address, for random entries and nomatch entries inside 10.0.0.0/24:
// the most specific entry holding an address decides, and a nomatch entry
// means no match.
func TestNomatchMatched(t *testing.T) {
	base := netip.MustParsePrefix("10.0.0.0/24")
	random := func(rng *rand.Rand) netip.Prefix {
		bits := 24 + rng.IntN(9)
		a := base.Addr().As4()
		a[3] = byte(rng.IntN(256))
		return netip.PrefixFrom(netip.AddrFrom4(a), bits).Masked()
	}
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 0))
		kinds := map[netip.Prefix]bool{} // prefix: nomatch
		for range 1 + rng.IntN(12) {
			kinds[random(rng)] = rng.IntN(2) == 0
		}
		var entries, nomatch []netip.Prefix
		for p, n := range kinds {
			if n {
				nomatch = append(nomatch, p)
			} else {
				entries = append(entries, p)
			}
		}
		got := nomatchMatched(entries, nomatch)
		for i := range 256 {
			a := base.Addr().As4()
			a[3] = byte(i)
			addr := netip.AddrFrom4(a)
			want, best := false, -1
			for p, n := range kinds {
				if p.Contains(addr) && p.Bits() > best {
					want, best = !n, p.Bits()
				}
			}
			in := false
			for _, p := range got {
				in = in || p.Contains(addr)
			}
			if in != want {
				t.Fatalf("seed %d: entries %v, nomatch %v: %v matched %v, ipset says %v (got %v)", seed, entries, nomatch, addr, in, want, got)
			}
		}
		for i := 1; i < len(got); i++ {
			if got[i-1].Overlaps(got[i]) {
				t.Fatalf("seed %d: %v overlap", seed, got)
			}
		}
	}
}
