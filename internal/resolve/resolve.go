// Package resolve computes every node's firewall from the cluster's policies
// and nodes. It is a pure function of its inputs, in the style of MetalLB's
// config.For: the controller lists objects, calls For, and writes what
// changed. Output is deterministic: the same inputs give deep-equal results.
package resolve

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// ProblemReason classifies what the resolver found wrong with a policy.
type ProblemReason string

const (
	// ReasonInvalidSelector: the node selector cannot be parsed; the policy
	// selects no node until it is fixed.
	ReasonInvalidSelector ProblemReason = "InvalidSelector"
	// ReasonDefaultActionConflict: policies on one node set different
	// default actions for a chain; the one evaluated first wins.
	ReasonDefaultActionConflict ProblemReason = "DefaultActionConflict"
)

// Problem is something a policy's status should report.
type Problem struct {
	Policy  string
	Reason  ProblemReason
	Message string
}

// Result is the desired state of every node.
type Result struct {
	// Nodes maps every node's name to its resolved firewall. Nodes that no
	// policy selects get an empty spec: all chains Accept.
	Nodes map[string]fwv1.NodeFirewallSpec
	// Matches maps every policy's name to the sorted names of the nodes it
	// selects.
	Matches map[string][]string
	// Problems are sorted by policy, then reason, then message.
	Problems []Problem
}

// compiledPolicy is a policy prepared once for matching against every node.
type compiledPolicy struct {
	policy   *fwv1.NodeFirewallPolicy
	selector labels.Selector
	rules    []fwv1.NodeFirewallRule
	ref      fwv1.PolicyReference
}

// For resolves every policy against every node.
func For(policies []fwv1.NodeFirewallPolicy, nodes []corev1.Node) Result {
	res := Result{
		Nodes:   make(map[string]fwv1.NodeFirewallSpec, len(nodes)),
		Matches: make(map[string][]string, len(policies)),
	}

	compiled := make([]compiledPolicy, 0, len(policies))
	for i := range policies {
		p := &policies[i]
		res.Matches[p.Name] = []string{}
		sel, err := metav1.LabelSelectorAsSelector(&p.Spec.NodeSelector)
		if err != nil {
			res.Problems = append(res.Problems, Problem{
				Policy:  p.Name,
				Reason:  ReasonInvalidSelector,
				Message: fmt.Sprintf("spec.nodeSelector: %v", err),
			})
			continue
		}
		compiled = append(compiled, compiledPolicy{
			policy:   p,
			selector: sel,
			rules:    nodeRules(p),
			ref:      fwv1.PolicyReference{Name: p.Name, Generation: p.Generation},
		})
	}
	// Lowest priority first, ties broken by name.
	sort.Slice(compiled, func(i, j int) bool {
		a, b := compiled[i].policy, compiled[j].policy
		if a.Spec.Priority != b.Spec.Priority {
			return a.Spec.Priority < b.Spec.Priority
		}
		return a.Name < b.Name
	})

	conflicts := map[conflictKey][]string{}
	matched := make([]*compiledPolicy, 0, len(compiled))
	for i := range nodes {
		node := &nodes[i]
		set := labels.Set(node.Labels)
		matched = matched[:0]
		nRules := 0
		for j := range compiled {
			if compiled[j].selector.Matches(set) {
				matched = append(matched, &compiled[j])
				nRules += len(compiled[j].rules)
			}
		}
		spec := fwv1.NodeFirewallSpec{}
		if len(matched) > 0 {
			spec.Policies = make([]fwv1.PolicyReference, 0, len(matched))
		}
		if nRules > 0 {
			spec.Rules = make([]fwv1.NodeFirewallRule, 0, nRules)
		}
		for _, cp := range matched {
			res.Matches[cp.policy.Name] = append(res.Matches[cp.policy.Name], node.Name)
			spec.Policies = append(spec.Policies, cp.ref)
			spec.Rules = append(spec.Rules, cp.rules...)
		}
		resolveDefaults(&spec, matched, node.Name, conflicts)
		res.Nodes[node.Name] = spec
	}
	for _, names := range res.Matches {
		sort.Strings(names)
	}
	res.Problems = append(res.Problems, conflictProblems(conflicts)...)
	sort.Slice(res.Problems, func(i, j int) bool {
		a, b := res.Problems[i], res.Problems[j]
		if a.Policy != b.Policy {
			return a.Policy < b.Policy
		}
		if a.Reason != b.Reason {
			return a.Reason < b.Reason
		}
		return a.Message < b.Message
	})
	return res
}

// nodeRules converts a policy's rules into the resolved form, once per policy.
func nodeRules(p *fwv1.NodeFirewallPolicy) []fwv1.NodeFirewallRule {
	mode := p.Spec.Mode
	if mode == "" {
		mode = fwv1.PolicyModeEnforce
	}
	out := make([]fwv1.NodeFirewallRule, len(p.Spec.Rules))
	for i, r := range p.Spec.Rules {
		out[i] = fwv1.NodeFirewallRule{
			Policy:       p.Name,
			Mode:         mode,
			Name:         r.Name,
			Chain:        r.Chain,
			Action:       r.Action,
			Protocol:     r.Protocol,
			Ports:        r.Ports,
			Sources:      r.Sources,
			Destinations: r.Destinations,
			InInterface:  r.InInterface,
			OutInterface: r.OutInterface,
			States:       r.States,
			Log:          r.Log,
		}
	}
	return out
}

// conflictKey identifies a losing policy's disagreement with a winner on a chain.
type conflictKey struct {
	loser, winner string
	chain         fwv1.Chain
	lost, won     fwv1.ChainPolicy
}

// resolveDefaults sets every chain's default action: the first policy in
// evaluation order that sets a chain wins; later disagreeing ones are noted.
func resolveDefaults(spec *fwv1.NodeFirewallSpec, matched []*compiledPolicy, node string, conflicts map[conflictKey][]string) {
	for _, chain := range fwv1.Chains {
		var winner *compiledPolicy
		var action fwv1.ChainPolicy
		for _, cp := range matched {
			da := cp.policy.Spec.DefaultActions
			if da == nil || da.For(chain) == "" {
				continue
			}
			if winner == nil {
				winner, action = cp, da.For(chain)
				continue
			}
			if da.For(chain) != action {
				k := conflictKey{loser: cp.policy.Name, winner: winner.policy.Name, chain: chain, lost: da.For(chain), won: action}
				conflicts[k] = append(conflicts[k], node)
			}
		}
		if winner == nil {
			action = fwv1.ChainPolicyAccept
		}
		spec.DefaultActions.Set(chain, action)
		if winner != nil && action == fwv1.ChainPolicyDrop && winner.policy.Spec.Mode == fwv1.PolicyModeAudit {
			spec.AuditedChains = append(spec.AuditedChains, chain)
		}
	}
}

// conflictProblems reports each disagreement once per losing policy, chain
// and winner, with a count and the first nodes affected.
func conflictProblems(conflicts map[conflictKey][]string) []Problem {
	out := make([]Problem, 0, len(conflicts))
	for k, nodes := range conflicts {
		sort.Strings(nodes)
		shown := nodes
		if len(shown) > 3 {
			shown = shown[:3]
		}
		out = append(out, Problem{
			Policy: k.loser,
			Reason: ReasonDefaultActionConflict,
			Message: fmt.Sprintf("spec.defaultActions.%s=%s is overridden by policy %q (%s), evaluated first, on %d node(s): %v",
				chainField(k.chain), k.lost, k.winner, k.won, len(nodes), shown),
		})
	}
	return out
}

func chainField(c fwv1.Chain) string {
	switch c {
	case fwv1.ChainInput:
		return "input"
	case fwv1.ChainForward:
		return "forward"
	}
	return "output"
}
