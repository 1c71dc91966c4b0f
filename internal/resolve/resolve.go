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
	"github.com/nodefw/nodefw/internal/text"
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

// Input is everything the resolver reads.
type Input struct {
	Policies []fwv1.NodeFirewallPolicy
	Nodes    []corev1.Node
	// Current are the NodeFirewalls as they are, with their agents'
	// status. Only staged rollouts read them, to keep nodes that have not
	// been admitted to a new generation on the one they have.
	Current []fwv1.NodeFirewall
}

// contribution is what one policy puts on one node.
type contribution struct {
	ref   fwv1.PolicyReference
	rules []fwv1.NodeFirewallRule
}

// compiledPolicy is a policy prepared once for matching against every node.
type compiledPolicy struct {
	policy   *fwv1.NodeFirewallPolicy
	selector labels.Selector
	latest   contribution
	// heldBack are the nodes a staged rollout keeps on their current
	// generation of this policy.
	heldBack map[string]bool
}

// For resolves every policy against every node, with no current state: a
// staged rollout admits its first nodes.
func For(policies []fwv1.NodeFirewallPolicy, nodes []corev1.Node) Result {
	return Resolve(Input{Policies: policies, Nodes: nodes})
}

// Resolve resolves every policy against every node.
func Resolve(in Input) Result {
	res := Result{
		Nodes:   make(map[string]fwv1.NodeFirewallSpec, len(in.Nodes)),
		Matches: make(map[string][]string, len(in.Policies)),
	}

	compiled := make([]compiledPolicy, 0, len(in.Policies))
	for i := range in.Policies {
		p := &in.Policies[i]
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
			latest:   contribution{ref: reference(p), rules: nodeRules(p)},
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

	// Match every node once; remember the matches in evaluation order.
	matchedBy := make([][]int, len(in.Nodes))
	for i := range in.Nodes {
		set := labels.Set(in.Nodes[i].Labels)
		for j := range compiled {
			if compiled[j].selector.Matches(set) {
				matchedBy[i] = append(matchedBy[i], j)
				name := compiled[j].policy.Name
				res.Matches[name] = append(res.Matches[name], in.Nodes[i].Name)
			}
		}
	}
	for _, names := range res.Matches {
		sort.Strings(names)
	}

	current := make(map[string]*fwv1.NodeFirewall, len(in.Current))
	for i := range in.Current {
		current[in.Current[i].Name] = &in.Current[i]
	}
	for j := range compiled {
		if compiled[j].policy.Spec.Rollout != nil {
			res.Problems = append(res.Problems, stage(&compiled[j], res.Matches[compiled[j].policy.Name], current)...)
		}
	}

	conflicts := map[conflictKey][]string{}
	contribs := make([]contribution, 0, len(compiled))
	for i := range in.Nodes {
		node := &in.Nodes[i]
		contribs = contribs[:0]
		nRules := 0
		for _, j := range matchedBy[i] {
			cp := &compiled[j]
			c := cp.latest
			if cp.heldBack[node.Name] {
				var ok bool
				if c, ok = previous(current[node.Name], cp.policy.Name); !ok {
					continue
				}
			}
			contribs = append(contribs, c)
			nRules += len(c.rules)
		}
		spec := fwv1.NodeFirewallSpec{}
		if len(contribs) > 0 {
			spec.Policies = make([]fwv1.PolicyReference, 0, len(contribs))
		}
		if nRules > 0 {
			spec.Rules = make([]fwv1.NodeFirewallRule, 0, nRules)
		}
		for _, c := range contribs {
			spec.Policies = append(spec.Policies, c.ref)
			spec.Rules = append(spec.Rules, c.rules...)
		}
		resolveDefaults(&spec, contribs, node.Name, conflicts)
		res.Nodes[node.Name] = spec
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

// reference is how a node firewall records a policy: its generation, mode
// and default actions, enough to keep the node on it during a rollout.
func reference(p *fwv1.NodeFirewallPolicy) fwv1.PolicyReference {
	ref := fwv1.PolicyReference{Name: p.Name, Generation: p.Generation, Mode: mode(p)}
	if d := p.Spec.DefaultActions; d != nil && *d != (fwv1.DefaultActions{}) {
		ref.DefaultActions = d.DeepCopy()
	}
	return ref
}

func mode(p *fwv1.NodeFirewallPolicy) fwv1.PolicyMode {
	if p.Spec.Mode == "" {
		return fwv1.PolicyModeEnforce
	}
	return p.Spec.Mode
}

// previous is the contribution a policy has on a node's current firewall.
func previous(nfw *fwv1.NodeFirewall, policy string) (contribution, bool) {
	if nfw == nil {
		return contribution{}, false
	}
	for _, ref := range nfw.Spec.Policies {
		if ref.Name != policy {
			continue
		}
		c := contribution{ref: ref}
		for _, r := range nfw.Spec.Rules {
			if r.Policy == policy {
				c.rules = append(c.rules, r)
			}
		}
		return c, true
	}
	return contribution{}, false
}

// nodeRules converts a policy's rules into the resolved form, once per policy.
func nodeRules(p *fwv1.NodeFirewallPolicy) []fwv1.NodeFirewallRule {
	mode := mode(p)
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
func resolveDefaults(spec *fwv1.NodeFirewallSpec, contribs []contribution, node string, conflicts map[conflictKey][]string) {
	for _, chain := range fwv1.Chains {
		var winner *fwv1.PolicyReference
		var action fwv1.ChainPolicy
		for i := range contribs {
			ref := &contribs[i].ref
			if ref.DefaultActions == nil || ref.DefaultActions.For(chain) == "" {
				continue
			}
			set := ref.DefaultActions.For(chain)
			if winner == nil {
				winner, action = ref, set
				continue
			}
			if set != action {
				k := conflictKey{loser: ref.Name, winner: winner.Name, chain: chain, lost: set, won: action}
				conflicts[k] = append(conflicts[k], node)
			}
		}
		if winner == nil {
			action = fwv1.ChainPolicyAccept
		}
		spec.DefaultActions.Set(chain, action)
		if winner != nil && action == fwv1.ChainPolicyDrop && winner.Mode == fwv1.PolicyModeAudit {
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
		out = append(out, Problem{
			Policy: k.loser,
			Reason: ReasonDefaultActionConflict,
			Message: fmt.Sprintf("spec.defaultActions.%s=%s is overridden by policy %q (%s), evaluated first, on %d node(s): %s",
				chainField(k.chain), k.lost, k.winner, k.won, len(nodes), text.ListSome(nodes, 3)),
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
