// Package resolve owns the desired state: from the cluster's policies, nodes
// and current node firewalls it computes every node's firewall and every
// policy's problems, and from those what to write to the cluster. It is
// pure, in the style of MetalLB's config.For: the controller lists objects,
// calls Resolve, hands the result to Plan, and writes what Plan says;
// `nodefw render` calls Resolve on files, so it warns as policy status does.
// The same inputs give deep-equal results.
package resolve

import (
	"fmt"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/revision"
)

// Input is everything the resolver reads.
type Input struct {
	Policies []fwv1.NodeFirewallPolicy
	Nodes    []corev1.Node
	// Current are the NodeFirewalls as they are, with their agents'
	// status. Only staged rollouts read them, to keep nodes that have not
	// been admitted to a new generation on the one they have.
	Current []fwv1.NodeFirewall
	// Failsafes are the ports the agents accept before any rule; the Drop
	// and Reject rules they shadow are reported.
	Failsafes Failsafes
	// RevisionNamespace, when set, stores each policy's rules once, in a
	// ControllerRevision in this namespace (Result.Revisions), and the
	// node specs carry no rules of their own: a policy with a staged
	// rollout is referenced by generation and revision, any other is
	// followed (PolicyReference.Follow) at the revision marked current
	// (Result.Current). Empty copies the rules into every node's spec,
	// as `nodefw render` shows them.
	RevisionNamespace string
	// RevisionLimit is the largest revision, in bytes as sent, that is
	// written; a policy whose revision is larger keeps every node on the
	// generation it has and is reported. 0 means no limit.
	RevisionLimit int
	// RefusedRevisions are the revisions the API server refused as too
	// large, by name, with their size: held as those over RevisionLimit.
	RefusedRevisions map[string]int
	// CurrentRevisions are, by policy name, the revisions marked current
	// (revision.Currents): what the nodes following each policy apply.
	CurrentRevisions map[string]revision.Current
}

// Failsafes are the agents' failsafe ports (their --failsafe-inbound and
// --failsafe-outbound), accepted on the input and output chains.
type Failsafes struct {
	Inbound, Outbound []compile.Failsafe
}

// Result is the desired state of every node.
type Result struct {
	// Nodes maps every node's name to its resolved firewall. Nodes that no
	// policy selects get an empty spec: all chains Accept.
	Nodes map[string]fwv1.NodeFirewallSpec
	// Matches maps every policy's name to the sorted names of the nodes it
	// selects.
	Matches map[string][]string
	// Problems are sorted by policy, then reason; those of one policy and
	// reason in rule order, or by message when they have no rule.
	Problems []Problem
	// Revisions are the latest revision of every policy, sorted by name,
	// when Input.RevisionNamespace is set.
	Revisions []*appsv1.ControllerRevision
	// Current are, by policy name, the current revision of every followed
	// policy, which should be marked so (revision.MarkCurrent): the
	// latest, or the one marked already while the latest is held.
	Current map[string]revision.Current
}

// Problem is something a policy's status should report.
type Problem struct {
	Policy string
	// Reason is a NodeFirewallPolicy condition reason: fwv1.ReasonInvalidSelector,
	// ReasonRolloutHalted, ReasonDefaultActionConflict,
	// ReasonDefaultActionOverridden, ReasonFailsafeShadowed or
	// ReasonNodeFirewallTooLarge.
	Reason  string
	Message string
}

// Resolve resolves every policy against every node.
func Resolve(in Input) Result {
	policies, problems := preparePolicies(in.Policies, in.RevisionNamespace, in.CurrentRevisions)
	problems = append(problems, holdOversizedRevisions(policies, in.RevisionLimit, in.RefusedRevisions)...)
	matchedBy, matches := matchNodes(in.Nodes, in.Policies, policies)
	current := byName(in.Current)
	problems = append(problems, stageRollouts(policies, matches, current)...)
	nodes, conflicts := nodeSpecs(in.Nodes, matchedBy, policies, current)
	problems = append(problems, conflictProblems(conflicts)...)
	for i := range in.Policies {
		problems = append(problems, failsafeShadows(&in.Policies[i], in.Failsafes)...)
	}
	sortProblems(problems)
	return Result{Nodes: nodes, Matches: matches, Problems: problems, Revisions: revisions(policies), Current: currents(policies)}
}

// contribution is what one policy puts on one node.
type contribution struct {
	ref   fwv1.PolicyReference
	rules []fwv1.NodeFirewallRule
}

// preparedPolicy is a policy prepared once for matching against every node.
type preparedPolicy struct {
	policy   *fwv1.NodeFirewallPolicy
	selector labels.Selector
	latest   contribution
	// revision holds the policy's rules when they are shared.
	revision *appsv1.ControllerRevision
	// heldBack are the nodes a staged rollout keeps on their current
	// generation of this policy.
	heldBack map[string]bool
	// held keeps every node on its current generation of this policy: its
	// revision is too large to be written.
	held bool
	// current is the revision marked current, when hasCurrent.
	current    revision.Current
	hasCurrent bool
}

// preparePolicies parses every policy's selector and converts its rules
// once (or into a revision in namespace, when it is set), and returns the
// policies in evaluation order: lowest priority first, ties broken by
// name. A policy whose selector does not parse is reported and left out.
func preparePolicies(policies []fwv1.NodeFirewallPolicy, namespace string, current map[string]revision.Current) ([]preparedPolicy, []Problem) {
	var problems []Problem
	prepared := make([]preparedPolicy, 0, len(policies))
	for i := range policies {
		p := &policies[i]
		sel, err := metav1.LabelSelectorAsSelector(&p.Spec.NodeSelector)
		if err != nil {
			problems = append(problems, Problem{
				Policy:  p.Name,
				Reason:  fwv1.ReasonInvalidSelector,
				Message: fmt.Sprintf("spec.nodeSelector: %v", err),
			})
			continue
		}
		pp := preparedPolicy{policy: p, selector: sel, latest: contribution{ref: reference(p)}}
		pp.current, pp.hasCurrent = current[p.Name]
		if namespace == "" {
			pp.latest.rules = nodeRules(p)
		} else {
			cr := revision.For(p, namespace)
			pp.revision = cr
			if p.Spec.Rollout == nil {
				pp.latest.ref.Follow, pp.latest.ref.Generation = true, 0
			} else {
				pp.latest.ref.Revision = cr.Name
			}
		}
		prepared = append(prepared, pp)
	}
	sort.Slice(prepared, func(i, j int) bool {
		a, b := prepared[i].policy, prepared[j].policy
		if pa, pb := a.Spec.EffectivePriority(), b.Spec.EffectivePriority(); pa != pb {
			return pa < pb
		}
		return a.Name < b.Name
	})
	return prepared, problems
}

// matchNodes matches every node once against every prepared policy. It
// returns, per node, the indexes of the policies that select it in
// evaluation order, and per policy (every one, also those left out) the
// sorted names of the nodes it selects.
func matchNodes(nodes []corev1.Node, all []fwv1.NodeFirewallPolicy, policies []preparedPolicy) ([][]int, map[string][]string) {
	matches := make(map[string][]string, len(all))
	for i := range all {
		matches[all[i].Name] = []string{}
	}
	matchedBy := make([][]int, len(nodes))
	for i := range nodes {
		set := labels.Set(nodes[i].Labels)
		for j := range policies {
			if policies[j].selector.Matches(set) {
				matchedBy[i] = append(matchedBy[i], j)
				name := policies[j].policy.Name
				matches[name] = append(matches[name], nodes[i].Name)
			}
		}
	}
	for _, names := range matches {
		sort.Strings(names)
	}
	return matchedBy, matches
}

// byName indexes the current NodeFirewalls by name.
func byName(nfws []fwv1.NodeFirewall) map[string]*fwv1.NodeFirewall {
	out := make(map[string]*fwv1.NodeFirewall, len(nfws))
	for i := range nfws {
		out[nfws[i].Name] = &nfws[i]
	}
	return out
}

// stageRollouts decides, for every policy with a staged rollout, which
// nodes it holds back on their current generation.
func stageRollouts(policies []preparedPolicy, matches map[string][]string, current map[string]*fwv1.NodeFirewall) []Problem {
	var problems []Problem
	for j := range policies {
		if policies[j].policy.Spec.Rollout != nil && !policies[j].held {
			problems = append(problems, stage(&policies[j], matches[policies[j].policy.Name], current)...)
		}
	}
	return problems
}

// nodeSpecs resolves every node's firewall from the policies that select
// it, and collects the default-action conflicts met on the way.
func nodeSpecs(nodes []corev1.Node, matchedBy [][]int, policies []preparedPolicy, current map[string]*fwv1.NodeFirewall) (map[string]fwv1.NodeFirewallSpec, map[conflictKey][]string) {
	specs := make(map[string]fwv1.NodeFirewallSpec, len(nodes))
	conflicts := map[conflictKey][]string{}
	contribs := make([]contribution, 0, len(policies))
	for i := range nodes {
		name := nodes[i].Name
		contribs = contributions(contribs[:0], name, matchedBy[i], policies, current[name])
		spec := nodeSpec(contribs)
		resolveDefaults(&spec, contribs, name, conflicts)
		specs[name] = spec
	}
	return specs, conflicts
}

// contributions appends to dst what each selecting policy puts on a node:
// its latest generation, or, where a staged rollout holds the node back,
// the generation the node has (none if it has none yet).
func contributions(dst []contribution, node string, matched []int, policies []preparedPolicy, nfw *fwv1.NodeFirewall) []contribution {
	for _, j := range matched {
		pp := &policies[j]
		c := pp.latest
		if pp.held || pp.heldBack[node] {
			var ok bool
			if c, ok = previous(nfw, pp.policy.Name); !ok {
				continue
			}
			if pp.heldBack[node] {
				c.ref = pinFollowed(c.ref, pp)
			}
		}
		dst = append(dst, c)
	}
	return dst
}

// nodeSpec concatenates the contributions' policies and rules, in
// evaluation order. Default actions are set by resolveDefaults.
func nodeSpec(contribs []contribution) fwv1.NodeFirewallSpec {
	nRules := 0
	for _, c := range contribs {
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
	return spec
}

// reference is how a node firewall records a policy: its generation, mode
// and default actions, enough to keep the node on it during a rollout.
// Enforce, the default mode, is left out: a node names tens of policies,
// and every byte of its object is decoded and checked on each of the
// object's writes.
func reference(p *fwv1.NodeFirewallPolicy) fwv1.PolicyReference {
	ref := fwv1.PolicyReference{Name: p.Name, Generation: p.Generation}
	if m := mode(p); m != fwv1.PolicyModeEnforce {
		ref.Mode = m
	}
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

// pinFollowed is ref, when it follows policy pp, pinned to the revision
// marked current: a staged rollout holds a node on what it applies, while
// the policy's nodes that are let through name its latest generation. The
// controller leaves the mark of a policy with a staged rollout where it is.
func pinFollowed(ref fwv1.PolicyReference, pp *preparedPolicy) fwv1.PolicyReference {
	if ref.Follow && pp.hasCurrent {
		ref.Follow, ref.Generation, ref.Revision = false, pp.current.Generation, pp.current.Revision
	}
	return ref
}

// currents are the current revisions of the followed policies: the
// latest, or, for a policy held because its latest is too large, the one
// marked already.
func currents(policies []preparedPolicy) map[string]revision.Current {
	var out map[string]revision.Current
	for i := range policies {
		pp := &policies[i]
		if pp.revision == nil || !pp.latest.ref.Follow {
			continue
		}
		if out == nil {
			out = map[string]revision.Current{}
		}
		if !pp.held {
			out[pp.policy.Name] = revision.Current{Revision: pp.revision.Name, Generation: pp.policy.Generation}
		} else if pp.hasCurrent {
			out[pp.policy.Name] = pp.current
		}
	}
	return out
}

// nodeRules converts a policy's rules into the resolved form, once per policy.
func nodeRules(p *fwv1.NodeFirewallPolicy) []fwv1.NodeFirewallRule {
	mode := mode(p)
	out := make([]fwv1.NodeFirewallRule, len(p.Spec.Rules))
	for i, r := range p.Spec.Rules {
		out[i] = r.NodeRule(p.Name, mode)
	}
	return out
}

// revisions are the prepared policies' revisions, sorted by name.
func revisions(policies []preparedPolicy) []*appsv1.ControllerRevision {
	var out []*appsv1.ControllerRevision
	for i := range policies {
		if cr := policies[i].revision; cr != nil && !policies[i].held {
			out = append(out, cr)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// sortProblems sorts problems by policy, then reason, keeping the order in
// which each step reported those of one policy and reason.
func sortProblems(problems []Problem) {
	sort.SliceStable(problems, func(i, j int) bool {
		a, b := problems[i], problems[j]
		if a.Policy != b.Policy {
			return a.Policy < b.Policy
		}
		return a.Reason < b.Reason
	})
}
