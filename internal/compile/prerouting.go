package compile

import (
	"github.com/nodefw/nodefw/api/v1alpha1"
)

// The prerouting chain: the API's PreRouting rules, for packets addressed
// to the node itself, seen before any DNAT.
//
// kube-proxy (nftables and iptables modes alike) and the CNI portmap plugin
// rewrite the destination of NodePort, hostPort and external IP traffic in
// nat chains at priority dstnat (-100) of the prerouting hook. By the input
// and forward hooks the packet carries the backend's address and port: a
// NodePort served by a pod walks Forward as podIP:targetPort, and no rule
// there can tell which NodePort, or whether a NodePort at all, the client
// used. The prerouting chain runs just before that DNAT, so its rules see
// the address and port the client sent to.
//
// Only packets addressed to the node are the chain's business: the first
// rules after the established accept let everything else go (forwarded
// traffic, and service addresses that are not the node's, which Forward
// decides after DNAT). Then come the same implicit accepts as on Input
// (loopback, ICMPv6 neighbour discovery, the inbound failsafe ports), so
// that no PreRouting rule can lock the node out, then the rules, then the
// default action. An accept only ends this chain: the packet still meets
// Input or Forward, and the tables of others.

// PreRoutingPriority is the priority of the prerouting chain: dstnat - 10.
// It runs after conntrack (-200), so conntrack states are known, and before
// every DNAT at dstnat (-100), so destinations are as the client sent them.
const PreRoutingPriority int32 = -110

// DAddrType is what the routing table says of a packet's destination
// address, as `fib daddr type` reads it, restricted to the one distinction
// nodefw needs.
type DAddrType uint8

const (
	// DAddrTypeAny matches every packet: no fib lookup.
	DAddrTypeAny DAddrType = iota
	// DAddrTypeLocal matches packets addressed to one of the node's own
	// addresses (fib daddr type local; iptables' -m addrtype --dst-type
	// LOCAL). Broadcast and multicast destinations are not local.
	DAddrTypeLocal
	// DAddrTypeNotLocal matches every other packet (fib daddr type != local).
	DAddrTypeNotLocal
)

// String returns the nft spelling of the match's operator and value.
func (t DAddrType) String() string {
	switch t {
	case DAddrTypeLocal:
		return "local"
	case DAddrTypeNotLocal:
		return "!= local"
	}
	return "any"
}

// usesPreRouting reports whether a ruleset needs the prerouting chain: the
// spec has PreRouting rules, or a Drop default there (enforced or
// audited). Without either the chain would accept every packet, so it is
// left out, and a node that does not use PreRouting pays nothing for a
// hook that every packet it receives, forwarded ones included, would cross.
func usesPreRouting(spec v1alpha1.NodeFirewallSpec, rules []parsedRule) bool {
	return len(rules) > 0 || spec.DefaultActions.PreRouting == v1alpha1.ChainPolicyDrop
}

// notLocalRule lets go, at once, the packets the prerouting chain is not
// about: those whose destination is not one of the node's addresses.
func notLocalRule() Rule {
	return Rule{DAddrType: DAddrTypeNotLocal, Verdict: VerdictAccept, Comment: "nodefw: not addressed to the node"}
}
