package policytest

import (
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/reference"
	"github.com/nodefw/nodefw/internal/resolve"
)

// Node is the node a packet is traced on: its name, its labels when known,
// and its resolved firewall.
type Node struct {
	Name   string
	Labels map[string]string
	Spec   v1alpha1.NodeFirewallSpec
	// AddressSets are the contents of the sets its rules' peers look up.
	AddressSets compile.AddressSets
}

// Policies names the policies that select the node, in evaluation order.
func (n Node) Policies() []string {
	out := make([]string, len(n.Spec.Policies))
	for i, p := range n.Spec.Policies {
		out[i] = p.Name
	}
	return out
}

// ResolveNode resolves the policies for the nodes, as the controller does,
// and returns the node named, with the problems policy status would
// report. Every node is resolved, so that a policy may read the others.
func ResolveNode(policies []v1alpha1.NodeFirewallPolicy, nodes []corev1.Node, name string, failsafes resolve.Failsafes) (Node, []resolve.Problem, error) {
	return ResolveNodeWithSets(policies, nodes, nil, name, failsafes)
}

// ResolveNodeWithSets is ResolveNode with the cluster's
// NodeFirewallAddressSets: peers resolve from them and from the nodes.
func ResolveNodeWithSets(policies []v1alpha1.NodeFirewallPolicy, nodes []corev1.Node, sets []v1alpha1.NodeFirewallAddressSet, name string, failsafes resolve.Failsafes) (Node, []resolve.Problem, error) {
	var node *corev1.Node
	for i := range nodes {
		if nodes[i].Name == name {
			node = &nodes[i]
		}
	}
	if node == nil {
		return Node{}, nil, fmt.Errorf("no node named %q", name)
	}
	res := resolve.Resolve(resolve.Input{Policies: policies, Nodes: nodes, Failsafes: failsafes})
	contents, peerProblems, err := AddressSetsFor(policies, nodes, sets)
	if err != nil {
		return Node{}, nil, err
	}
	return Node{Name: name, Labels: maps.Clone(node.Labels), Spec: res.Nodes[name], AddressSets: contents}, append(res.Problems, peerProblems...), nil
}

// Trace is a packet traced through one chain of a node's firewall: the
// node, the packet as read, and reference.TraceSpec's steps and verdict.
type Trace struct {
	Node     string            `json:"node"`
	Labels   map[string]string `json:"labels,omitempty"`
	Policies []string          `json:"policies"`
	Packet   Packet            `json:"packet"`
	// DecidedBy names the step that decided, as a test case's decidedBy
	// does: "policy/rule", an implicit accept or "default".
	DecidedBy string `json:"decidedBy"`
	reference.Trace

	parsed Parsed
}

// TraceNode traces a packet through the node's firewall with the agent's
// failsafe ports in opts.
func TraceNode(n Node, opts compile.Options, p Parsed) Trace {
	if opts.AddressSets == nil {
		opts.AddressSets = n.AddressSets
	}
	t := reference.TraceSpec(n.Spec, opts, p.Chain, p.Packet)
	return Trace{
		Node: n.Name, Labels: n.Labels, Policies: n.Policies(), Packet: p.Describe(),
		DecidedBy: t.Decider().Name(), Trace: t, parsed: p,
	}
}

// FailsafeOptions are compile options with the agents' failsafe ports.
func FailsafeOptions(f resolve.Failsafes) compile.Options {
	return compile.Options{FailsafeInbound: f.Inbound, FailsafeOutbound: f.Outbound}
}
