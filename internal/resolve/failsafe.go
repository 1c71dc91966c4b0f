package resolve

import (
	"fmt"
	"strings"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// failsafeShadows reports the policy's Drop and Reject rules that would
// match traffic to a failsafe port. The failsafe accept comes first in the
// kernel, so such a rule never drops that traffic; the user should know
// their rule is partly without effect.
func failsafeShadows(p *fwv1.NodeFirewallPolicy, fs Failsafes) []Problem {
	var out []Problem
	for i, r := range p.Spec.Rules {
		if r.Action == fwv1.ActionAccept {
			continue
		}
		var failsafes []compile.Failsafe
		switch r.Chain {
		case fwv1.ChainInput, fwv1.ChainPreRouting:
			failsafes = fs.Inbound
		case fwv1.ChainOutput:
			failsafes = fs.Outbound
		}
		var hit []string
		for _, f := range failsafes {
			if shadows(r, f) {
				hit = append(hit, f.String())
			}
		}
		if len(hit) > 0 {
			out = append(out, Problem{
				Policy: p.Name,
				Reason: fwv1.ReasonFailsafeShadowed,
				Message: fmt.Sprintf("spec.rules[%d] (%s) would %s failsafe port(s) %s, which nodes accept before any rule",
					i, r.Name, strings.ToLower(string(r.Action)), strings.Join(hit, ", ")),
			})
		}
	}
	return out
}

// shadows reports whether rule r matches some traffic to failsafe f.
func shadows(r fwv1.Rule, f compile.Failsafe) bool {
	if r.Protocol != "" && r.Protocol != f.Protocol {
		return false
	}
	if len(r.Ports) == 0 {
		return true
	}
	for _, pr := range r.Ports {
		if pr.Port <= int32(f.Ports.Last) && pr.Last() >= int32(f.Ports.First) {
			return true
		}
	}
	return false
}
