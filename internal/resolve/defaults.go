package resolve

import (
	"fmt"
	"sort"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/text"
)

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
// and winner, with a count and the first nodes affected, sorted by policy
// and message.
func conflictProblems(conflicts map[conflictKey][]string) []Problem {
	out := make([]Problem, 0, len(conflicts))
	for k, nodes := range conflicts {
		sort.Strings(nodes)
		out = append(out, Problem{
			Policy: k.loser,
			Reason: fwv1.ReasonDefaultActionConflict,
			Message: fmt.Sprintf("spec.defaultActions.%s=%s is overridden by policy %q (%s), evaluated first, on %d node(s): %s",
				chainField(k.chain), k.lost, k.winner, k.won, len(nodes), text.ListSome(nodes, 3)),
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
