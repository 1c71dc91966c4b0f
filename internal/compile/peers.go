package compile

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// Peers: a rule's from and to name NodeFirewallAddressSets, whose contents
// the agent watches and passes in Options.AddressSets. Each set becomes a
// named interval set per family, which the rule looks up (`ip saddr
// @peer-v4-...`); a change of the contents changes only that set's
// elements, never a rule, so the programmer updates the elements in place.
// A peer's except is a constant anonymous set the rule must not match
// (`ip saddr != { ... }`). A rule with several peers becomes one rule per
// combination of a source and a destination peer, in each family: the
// first that matches decides, as the peers' union would. Rules with peers
// never join runs of set lookups.

// AddressSets are the contents of NodeFirewallAddressSets by name, each a
// list of masked prefixes of both families. A set a peer names that is not
// here is empty: the peer matches nothing. A list already in the order
// SortAddressSet gives, without one prefix inside another, is taken as it
// is, neither copied nor sorted: the ruleset shares it, so it must not
// change afterwards.
type AddressSets map[string][]netip.Prefix

// ParseAddressSet parses the entries of a NodeFirewallAddressSet, masking
// CIDRs as rules' addresses are. It fails on the first entry that does not
// parse.
func ParseAddressSet(entries []v1alpha1.AddressSetEntry) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, len(entries))
	for i, e := range entries {
		p, err := parseAddress(string(e))
		if err != nil {
			return nil, fmt.Errorf("addresses[%d]: %w", i, err)
		}
		out[i] = p
	}
	return out, nil
}

// AddressSetNames returns, sorted, the names of the NodeFirewallAddressSets
// the rules of spec look up: what the agent must pass in
// Options.AddressSets. Peers whose set name cannot be derived are left
// out (Compile reports them).
func AddressSetNames(spec v1alpha1.NodeFirewallSpec) []string {
	seen := map[string]bool{}
	for i := range spec.Rules {
		r := &spec.Rules[i]
		for _, p := range slices.Concat(r.From, r.To) {
			if name, err := p.SetName(); err == nil {
				seen[name] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// PeerSet is a named interval set of one family's addresses of a
// NodeFirewallAddressSet, which rules with peers look up.
type PeerSet struct {
	// Name is the nftables name (see peerSetName).
	Name string
	// Source is the NodeFirewallAddressSet it holds.
	Source string
	// Family is FamilyIPv4 or FamilyIPv6.
	Family Family
	// Prefixes are the set's addresses of Family, masked, sorted and
	// without one inside another (canonicalPeerPrefixes); the kernel's
	// encoding merges those that touch.
	Prefixes []netip.Prefix
}

// maxPeerSetName bounds the part of a peer set's nftables name taken from
// its NodeFirewallAddressSet: the kernel's set names are shorter than the
// API's object names.
const maxPeerSetName = 48

// peerSetName is the nftables name of the family f part of the
// NodeFirewallAddressSet source: "peer-v4-" or "peer-v6-" and the name,
// cut and completed with a hash when it is long.
func peerSetName(source string, f Family) string {
	if len(source) > maxPeerSetName {
		sum := sha256.Sum256([]byte(source))
		source = source[:maxPeerSetName-17] + "-" + hex.EncodeToString(sum[:8])
	}
	return "peer-" + f.String() + "-" + source
}

// peerMatch is one side of an expanded rule with peers: the set to look up
// and the except prefixes of the family.
type peerMatch struct {
	set    string // NodeFirewallAddressSet name
	except []netip.Prefix
}

// peerMatches are a rule's peers on one side for family f; a side without
// peers is one match of nothing.
func peerMatches(peers []v1alpha1.Peer, f Family) []peerMatch {
	if len(peers) == 0 {
		return []peerMatch{{}}
	}
	out := make([]peerMatch, 0, len(peers))
	for _, p := range peers {
		name, _ := p.SetName() // validated
		var except []netip.Prefix
		for _, e := range p.Except {
			if pr, err := parseAddress(e); err == nil && prefixFamily(pr) == f {
				except = append(except, pr)
			}
		}
		out = append(out, peerMatch{set: name, except: compactPrefixes(except)})
	}
	return out
}

// peerFamilyMatches expands a rule with peers: per family the rule can
// match in (its protocol and literal addresses decide; the sets' contents
// never do, so that they can change without changing a rule), one match
// per pair of a source and a destination peer.
func peerFamilyMatches(r parsedRule) []familyMatch {
	src := splitByFamily(r.src())
	dst := splitByFamily(r.dst())
	var out []familyMatch
	for _, f := range families {
		if pf := protoFamily(r.proto); pf != FamilyAny && pf != f {
			continue
		}
		if (len(r.Sources) > 0 && len(src[f]) == 0) || (len(r.Destinations) > 0 && len(dst[f]) == 0) {
			continue
		}
		for _, s := range peerMatches(r.From, f) {
			for _, d := range peerMatches(r.To, f) {
				out = append(out, familyMatch{family: f, saddr: src[f], daddr: dst[f], speer: s, dpeer: d})
			}
		}
	}
	return out
}

// hasPeers reports whether a rule names peers.
func hasPeers(r *v1alpha1.NodeFirewallRule) bool { return len(r.From) > 0 || len(r.To) > 0 }

// peerSetMaker declares the peer sets rules look up, once each, in the
// order of the rules that first use them, with their contents.
type peerSetMaker struct {
	rs       *Ruleset
	contents AddressSets
	declared map[string]bool
}

// use declares the family f part of source, if not yet, and returns its
// nftables name.
func (m *peerSetMaker) use(source string, f Family) string {
	name := peerSetName(source, f)
	if m.declared[name] {
		return name
	}
	if m.declared == nil {
		m.declared = map[string]bool{}
	}
	m.declared[name] = true
	m.rs.PeerSets = append(m.rs.PeerSets, PeerSet{Name: name, Source: source, Family: f, Prefixes: familyPeerPrefixes(m.contents[source], f)})
	return name
}

// familyPeerPrefixes are the canonical prefixes of family f of a set's
// contents: of a canonical list (a large set the agent keeps sorted), the
// family's part of it, shared, at the cost of one pass; of any other, a
// sorted copy.
func familyPeerPrefixes(ps []netip.Prefix, f Family) []netip.Prefix {
	if canonicalPeerList(ps) {
		// IPv4 addresses sort before IPv6 ones.
		v6, _ := slices.BinarySearchFunc(ps, true, func(p netip.Prefix, _ bool) int {
			if p.Addr().Is4() {
				return -1
			}
			return 1
		})
		if f == FamilyIPv4 {
			ps = ps[:v6]
		} else {
			ps = ps[v6:]
		}
		if len(ps) == 0 {
			return nil
		}
		return ps[:len(ps):len(ps)]
	}
	var of []netip.Prefix
	for _, p := range ps {
		if prefixFamily(p) == f {
			of = append(of, p)
		}
	}
	return canonicalPeerPrefixes(of)
}

// SortAddressSet sorts a set's prefixes as the canonical form of peer sets
// has them: by address, IPv4 first, the shorter of two at one address
// first.
func SortAddressSet(ps []netip.Prefix) {
	slices.SortFunc(ps, comparePrefixes)
}

func comparePrefixes(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// canonicalPeerList reports whether ps is what canonicalPeerPrefixes makes
// of it: masked, sorted, no prefix inside the one before.
func canonicalPeerList(ps []netip.Prefix) bool {
	for i, p := range ps {
		if !p.IsValid() || p.Masked() != p {
			return false
		}
		if i > 0 && (comparePrefixes(ps[i-1], p) >= 0 || ps[i-1].Contains(p.Addr())) {
			return false
		}
	}
	return true
}

// canonicalPeerPrefixes sorts prefixes and merges those that overlap or
// touch into the fewest prefixes covering exactly their union, so that
// the elements of equal contents are equal and the kernel's interval set
// gets disjoint intervals.
func canonicalPeerPrefixes(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	return compactPrefixes(slices.Clone(ps))
}

// validatePeers checks a rule's from and to: each peer names exactly one
// thing, its selector parses, its except parses; from not with sources,
// to not with destinations.
func validatePeers(path func() string, r *v1alpha1.NodeFirewallRule, fail func(path, format string, args ...any)) {
	for _, side := range []struct {
		field, literal string
		peers          []v1alpha1.Peer
		literals       int
	}{{"from", "sources", r.From, len(r.Sources)}, {"to", "destinations", r.To, len(r.Destinations)}} {
		if len(side.peers) > 0 && side.literals > 0 {
			fail(path()+"."+side.field, "a rule takes %s or %s, not both", side.literal, side.field)
		}
		if len(side.peers) > v1alpha1.MaxPeers {
			fail(path()+"."+side.field, "%d peers, at most %d", len(side.peers), v1alpha1.MaxPeers)
		}
		for j, p := range side.peers {
			pp := fmt.Sprintf("%s.%s[%d]", path(), side.field, j)
			n := 0
			for _, set := range []bool{p.NodeSelector != nil, p.PodCIDRs != nil, p.AddressSet != ""} {
				if set {
					n++
				}
			}
			if n != 1 {
				fail(pp, "a peer sets exactly one of nodeSelector, podCIDRs and addressSet")
				continue
			}
			switch p.AddressType {
			case "", v1alpha1.NodeAddressInternalIP, v1alpha1.NodeAddressExternalIP:
				if p.AddressType != "" && p.NodeSelector == nil {
					fail(pp+".addressType", "addressType requires nodeSelector")
				}
			default:
				fail(pp+".addressType", "%q is not InternalIP or ExternalIP", p.AddressType)
			}
			if p.AddressSet != "" && !isDNS1123Subdomain(p.AddressSet) {
				fail(pp+".addressSet", "%q is not a NodeFirewallAddressSet name", p.AddressSet)
			} else if _, err := p.SetName(); err != nil {
				fail(pp, "%v", err)
			}
			if len(p.Except) > v1alpha1.MaxPeerExcepts {
				fail(pp+".except", "%d entries, at most %d", len(p.Except), v1alpha1.MaxPeerExcepts)
			}
			for k, e := range p.Except {
				if _, err := parseAddress(e); err != nil {
					fail(fmt.Sprintf("%s.except[%d]", pp, k), "%v", err)
				}
			}
		}
	}
	// Limits keep state per rule: copies of the rule for several peers
	// would each keep their own.
	if (r.Limit != nil || r.ConnLimit != nil) && (len(r.From) > 1 || len(r.To) > 1) {
		fail(path(), "limit and connLimit take at most one peer in from and one in to")
	}
}

// renderPeerSet writes a peer set's declaration, one prefix per line.
func renderPeerSet(b *strings.Builder, s PeerSet) {
	fmt.Fprintf(b, "\tset %s {\n", s.Name)
	fmt.Fprintf(b, "\t\ttype %s\n", fieldType(FieldSAddr, s.Family))
	b.WriteString("\t\tflags interval\n")
	if len(s.Prefixes) > 0 {
		b.WriteString("\t\telements = {\n")
		for i, p := range s.Prefixes {
			b.WriteString("\t\t\t" + formatPrefix(p))
			if i < len(s.Prefixes)-1 {
				b.WriteString(",")
			}
			b.WriteString("\n")
		}
		b.WriteString("\t\t}\n")
	}
	b.WriteString("\t}\n")
}

// peerParts renders the lookup of a peer set and its except.
func peerParts(ip, field, setName string, except []netip.Prefix) []string {
	var parts []string
	if setName != "" {
		parts = append(parts, ip, field, "@"+setName)
	}
	if len(except) > 0 {
		parts = append(parts, ip, field, "!=", set(except, formatPrefix))
	}
	return parts
}
