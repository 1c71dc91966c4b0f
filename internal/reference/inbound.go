package reference

import (
	"net/netip"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// DNAT is what a nat chain at dstnat (kube-proxy's, the CNI portmap
// plugin's) does to a packet between nodefw's PreRouting chain and Input or
// Forward: it gives the packet a new destination, which the kernel then
// routes.
type DNAT struct {
	// DAddr and DPort are the new destination address and port.
	DAddr netip.Addr
	DPort uint16
	// Local says the new destination is one of the node's addresses (a
	// backend in the host network): the packet goes on to Input.
	// Otherwise it is forwarded, to a pod or another node.
	Local bool
	// OIfName is the interface a forwarded packet leaves by.
	OIfName string
}

// EvalInbound decides a packet that reaches the node from a network
// interface (or lo), as the kernel does: the PreRouting chain sees it as
// the client sent it; when PreRouting drops or rejects it, that is the
// verdict. Otherwise dnat, when not nil, rewrites its destination, and the
// packet goes to Input when its destination, translated or not, is one of
// the node's addresses (DAddrLocal, or DNAT.Local), and to Forward, out of
// OIfName, when not. It returns the verdict and the chain that gave it.
//
// p.OIfName matters only to a forwarded packet that no DNAT rewrites.
func EvalInbound(spec v1alpha1.NodeFirewallSpec, opts compile.Options, p Packet, dnat *DNAT) (compile.Verdict, v1alpha1.Chain) {
	if v := EvalSpec(spec, opts, v1alpha1.ChainPreRouting, p); v != compile.VerdictAccept {
		return v, v1alpha1.ChainPreRouting
	}
	q, chain := AfterPreRouting(p, dnat)
	return EvalSpec(spec, opts, chain, q), chain
}

// EvalRulesetInbound runs a packet through a compiled ruleset's prerouting
// chain and then its input or forward chain, as EvalInbound does through
// the spec: the kernel's path through the table.
func EvalRulesetInbound(rs *compile.Ruleset, p Packet, dnat *DNAT) (compile.Verdict, v1alpha1.Chain) {
	if v := EvalRuleset(rs, compile.ChainPreRouting, p); v != compile.VerdictAccept {
		return v, v1alpha1.ChainPreRouting
	}
	q, chain := AfterPreRouting(p, dnat)
	name := compile.ChainInput
	if chain == v1alpha1.ChainForward {
		name = compile.ChainForward
	}
	return EvalRuleset(rs, name, q), chain
}

// AfterPreRouting is a packet that PreRouting accepted as Input or Forward
// see it, and which of them: translated by dnat, if not nil; an input
// packet has no output interface. Tracing a packet's whole way through a
// node takes it from here to the second chain.
func AfterPreRouting(p Packet, dnat *DNAT) (Packet, v1alpha1.Chain) {
	q := p
	if dnat != nil {
		q.DAddr, q.DPort, q.DAddrLocal, q.OIfName = dnat.DAddr, dnat.DPort, dnat.Local, dnat.OIfName
	}
	if q.DAddrLocal {
		q.OIfName = ""
		return q, v1alpha1.ChainInput
	}
	return q, v1alpha1.ChainForward
}
