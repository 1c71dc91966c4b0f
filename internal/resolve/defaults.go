package resolve

import (
	"fmt"
	"sort"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/text"
)

// conflictKey identifies one disagreement on a chain's default action: a
// policy that sets Accept and one that sets Drop, on the same nodes.
type conflictKey struct {
	accept, drop string
	chain        fwv1.Chain
}

// resolveDefaults sets every chain's default action from the policies on a
// node. They fail safe: when policies disagree, the more restrictive
// default, Drop, wins whatever their priorities, so that a policy that
// sets Accept cannot switch off the Drop of every other one. Every pair
// that disagrees is noted, for both policies to report it. A Drop is
// audited (counted and logged, not enforced) only when every policy that
// sets it is in Audit mode.
func resolveDefaults(spec *fwv1.NodeFirewallSpec, contribs []contribution, node string, conflicts map[conflictKey][]string) {
	for _, chain := range fwv1.Chains {
		var accepts, drops []*fwv1.PolicyReference
		for i := range contribs {
			ref := &contribs[i].ref
			if ref.DefaultActions == nil {
				continue
			}
			switch ref.DefaultActions.For(chain) {
			case fwv1.ChainPolicyAccept:
				accepts = append(accepts, ref)
			case fwv1.ChainPolicyDrop:
				drops = append(drops, ref)
			}
		}
		if len(drops) == 0 {
			spec.DefaultActions.Set(chain, fwv1.ChainPolicyAccept)
			continue
		}
		spec.DefaultActions.Set(chain, fwv1.ChainPolicyDrop)
		audited := true
		for _, d := range drops {
			audited = audited && d.Mode == fwv1.PolicyModeAudit
			for _, a := range accepts {
				k := conflictKey{accept: a.Name, drop: d.Name, chain: chain}
				conflicts[k] = append(conflicts[k], node)
			}
		}
		if audited {
			spec.AuditedChains = append(spec.AuditedChains, chain)
		}
	}
}

// conflictProblems reports each disagreement to both policies, each
// message naming the other, with a count and the first nodes affected,
// sorted by policy and message: the policy whose Accept is overridden
// with ReasonDefaultActionOverridden, the one whose Drop wins with
// ReasonDefaultActionConflict.
func conflictProblems(conflicts map[conflictKey][]string) []Problem {
	out := make([]Problem, 0, 2*len(conflicts))
	for k, nodes := range conflicts {
		sort.Strings(nodes)
		shown := text.ListSome(nodes, 3)
		field := "spec.defaultActions." + chainField(k.chain)
		out = append(out, Problem{
			Policy: k.accept,
			Reason: fwv1.ReasonDefaultActionOverridden,
			Message: fmt.Sprintf("%s=Accept is overridden by policy %q, which sets Drop: the more restrictive default wins, on %d node(s): %s",
				field, k.drop, len(nodes), shown),
		}, Problem{
			Policy: k.drop,
			Reason: fwv1.ReasonDefaultActionConflict,
			Message: fmt.Sprintf("%s=Drop overrides policy %q, which sets Accept: the more restrictive default wins, on %d node(s): %s",
				field, k.accept, len(nodes), shown),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Policy != out[j].Policy {
			return out[i].Policy < out[j].Policy
		}
		return out[i].Message < out[j].Message
	})
	return out
}

func chainField(c fwv1.Chain) string {
	switch c {
	case fwv1.ChainInput:
		return "input"
	case fwv1.ChainForward:
		return "forward"
	case fwv1.ChainPreRouting:
		return "preRouting"
	}
	return "output"
}
