package importer

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// Matches as conditions: what a rule matches is the fields of a Rule but
// its chain, name, action, answer and log. Taking a user chain in at a
// jump gives each of its rules the conditions of both, intersected.

// matchOf is r's matches alone.
func matchOf(r v1alpha1.Rule) v1alpha1.Rule {
	return v1alpha1.Rule{
		Protocol: r.Protocol, Ports: r.Ports, Sources: r.Sources, Destinations: r.Destinations,
		InInterface: r.InInterface, OutInterface: r.OutInterface, States: r.States,
		SourcePorts: r.SourcePorts, ICMPTypes: r.ICMPTypes, Limit: r.Limit, ConnLimit: r.ConnLimit,
		From: r.From, To: r.To,
	}
}

// isEmptyMatch reports whether r matches every packet.
func isEmptyMatch(r v1alpha1.Rule) bool {
	return reflect.DeepEqual(matchOf(r), v1alpha1.Rule{})
}

// withoutStates is r without its conntrack states.
func withoutStates(r v1alpha1.Rule) v1alpha1.Rule {
	r.States = nil
	return r
}

// sameMatch reports whether a and b match the same packets, written the
// same way.
func sameMatch(a, b v1alpha1.Rule) bool {
	return reflect.DeepEqual(matchOf(a), matchOf(b))
}

// intersect returns a rule of a's chain that matches the packets both a
// and b match; none says no packet does. err says the intersection cannot
// be written as one rule.
func intersect(a, b v1alpha1.Rule) (r v1alpha1.Rule, none bool, err string) {
	r = v1alpha1.Rule{Chain: a.Chain}
	switch {
	case a.Protocol == "" || a.Protocol == b.Protocol:
		r.Protocol = b.Protocol
	case b.Protocol == "":
		r.Protocol = a.Protocol
	default:
		return r, true, ""
	}
	var ok bool
	if r.Ports, ok = intersectRanges(a.Ports, b.Ports); !ok {
		return r, true, ""
	}
	sa, sb := toPortRanges(a.SourcePorts), toPortRanges(b.SourcePorts)
	sp, ok := intersectRanges(sa, sb)
	if !ok {
		return r, true, ""
	}
	for _, p := range sp {
		r.SourcePorts = append(r.SourcePorts, v1alpha1.SourcePortRange(p))
	}
	if r.Sources, ok = intersectAddresses(a.Sources, b.Sources); !ok {
		return r, true, ""
	}
	if r.Destinations, ok = intersectAddresses(a.Destinations, b.Destinations); !ok {
		return r, true, ""
	}
	if r.InInterface, ok = intersectInterfaces(a.InInterface, b.InInterface); !ok {
		return r, true, ""
	}
	if r.OutInterface, ok = intersectInterfaces(a.OutInterface, b.OutInterface); !ok {
		return r, true, ""
	}
	// iptables matches -i in OUTPUT and -o in INPUT against no interface.
	if (r.InInterface != "" && r.Chain == v1alpha1.ChainOutput) || (r.OutInterface != "" && r.Chain == v1alpha1.ChainInput) {
		return r, true, ""
	}
	if r.States, ok = intersectStates(a.States, b.States); !ok {
		return r, true, ""
	}
	if r.ICMPTypes, ok = intersectICMPTypes(r.Protocol, a.ICMPTypes, b.ICMPTypes); !ok {
		return r, true, ""
	}
	// A packet in two sets is in no one peer: the sets' intersection has
	// no name.
	switch {
	case len(a.From) > 0 && len(b.From) > 0, len(a.To) > 0 && len(b.To) > 0:
		return r, false, "the jump and the rule both match an address set on the same side: a rule has one"
	case len(a.From)+len(b.From) > 0 && len(r.Sources) > 0, len(a.To)+len(b.To) > 0 && len(r.Destinations) > 0:
		return r, false, "the jump and the rule match addresses and an address set on the same side: a rule takes one or the other"
	}
	r.From = slices.Concat(a.From, b.From)
	r.To = slices.Concat(a.To, b.To)
	switch {
	case a.Limit != nil && b.Limit != nil:
		return r, false, "the jump and the rule both have a rate limit: a rule has one"
	case a.ConnLimit != nil && b.ConnLimit != nil:
		return r, false, "the jump and the rule both have a connection limit: a rule has one"
	}
	r.Limit, r.ConnLimit = a.Limit, a.ConnLimit
	if b.Limit != nil {
		r.Limit = b.Limit
	}
	if b.ConnLimit != nil {
		r.ConnLimit = b.ConnLimit
	}
	for _, n := range []int{len(r.Ports), len(r.SourcePorts), len(r.Sources), len(r.Destinations)} {
		if n > 32 {
			return r, false, fmt.Sprintf("the jump and the rule together match %d ports or addresses: a rule holds 32", n)
		}
	}
	return r, false, ""
}

func toPortRanges(s []v1alpha1.SourcePortRange) []v1alpha1.PortRange {
	out := make([]v1alpha1.PortRange, len(s))
	for i, p := range s {
		out[i] = v1alpha1.PortRange(p)
	}
	return out
}

// intersectRanges intersects two lists of port ranges, either empty for
// any port; ok is false when no port is in both.
func intersectRanges(a, b []v1alpha1.PortRange) ([]v1alpha1.PortRange, bool) {
	switch {
	case len(a) == 0:
		return b, true
	case len(b) == 0:
		return a, true
	}
	var out []v1alpha1.PortRange
	for _, x := range a {
		for _, y := range b {
			lo, hi := max(x.Port, y.Port), min(x.Last(), y.Last())
			if lo > hi {
				continue
			}
			pr := v1alpha1.PortRange{Port: lo}
			if hi != lo {
				pr.EndPort = hi
			}
			if !slices.Contains(out, pr) {
				out = append(out, pr)
			}
		}
	}
	return out, len(out) > 0
}

// intersectAddresses intersects two lists of addresses or CIDRs, either
// empty for any address, keeping the narrower of two nested prefixes as
// written; ok is false when no address is in both.
func intersectAddresses(a, b []string) ([]string, bool) {
	switch {
	case len(a) == 0:
		return b, true
	case len(b) == 0:
		return a, true
	}
	var out []string
	for _, x := range a {
		px, err := v1alpha1.ParseAddress(x)
		if err != nil {
			continue
		}
		for _, y := range b {
			py, err := v1alpha1.ParseAddress(y)
			if err != nil || px.Addr().Is4() != py.Addr().Is4() {
				continue
			}
			var in string
			switch {
			case px.Bits() <= py.Bits() && px.Contains(py.Addr()):
				in = y
			case py.Bits() <= px.Bits() && py.Contains(px.Addr()):
				in = x
			default:
				continue
			}
			if !slices.Contains(out, in) {
				out = append(out, in)
			}
		}
	}
	return out, len(out) > 0
}

// intersectInterfaces intersects two interface patterns ("" and "+" for
// any, "name", "prefix+"); ok is false when no name matches both.
func intersectInterfaces(a, b string) (string, bool) {
	switch {
	case a == "" || a == "+":
		return b, true
	case b == "" || b == "+":
		return a, true
	case a == b:
		return a, true
	}
	ab, aw := strings.CutSuffix(a, "+")
	bb, bw := strings.CutSuffix(b, "+")
	switch {
	case aw && strings.HasPrefix(bb, ab):
		return b, true
	case bw && strings.HasPrefix(ab, bb):
		return a, true
	}
	return "", false
}

// intersectStates intersects two lists of conntrack states, either empty
// for any state.
func intersectStates(a, b []v1alpha1.ConnState) ([]v1alpha1.ConnState, bool) {
	switch {
	case len(a) == 0:
		return b, true
	case len(b) == 0:
		return a, true
	}
	var out []v1alpha1.ConnState
	for _, s := range a {
		if slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out, len(out) > 0
}

// intersectICMPTypes intersects two lists of ICMP types of protocol p,
// either empty for any type: a type with every code and one of its codes
// meet in the code.
func intersectICMPTypes(p v1alpha1.Protocol, a, b []v1alpha1.ICMPType) ([]v1alpha1.ICMPType, bool) {
	switch {
	case len(a) == 0:
		return b, true
	case len(b) == 0:
		return a, true
	}
	var out []v1alpha1.ICMPType
	for _, x := range a {
		mx, _ := x.Message(p)
		for _, y := range b {
			my, _ := y.Message(p)
			var in v1alpha1.ICMPType
			switch {
			case mx.Type != my.Type:
				continue
			case mx.AnyCode:
				in = y
			case my.AnyCode || mx.Code == my.Code:
				in = x
			default:
				continue
			}
			if !slices.Contains(out, in) {
				out = append(out, in)
			}
		}
	}
	return out, len(out) > 0
}
