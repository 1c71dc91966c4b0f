package reference

import "github.com/nodefw/nodefw/api/v1alpha1"

// statefulMatch is a match on what the kernel counts across packets, such
// as a rate or connection limit. The outcome for one packet depends on the
// packets before it, which no trace knows: the reference semantics take
// the packet to be under the limit, as the first packets of a flow are,
// and the trace says so in a note, so that a verdict that hangs on the
// limit is never presented as certain.
type statefulMatch struct {
	// field is the rule's field, by its JSON name.
	field string
	// underLimit reports whether the rule sets the field and, if it does,
	// whether a packet under the limit matches it (a limit on the excess,
	// such as nftables' `limit rate over`, does not) and a note that says
	// what the limit is.
	underLimit func(r *v1alpha1.NodeFirewallRule) (set, matches bool, note string)
}

// statefulMatches are tested after every stateless match, as the kernel
// counts only the packets a rule's other matches let through: the
// connection limit, then the rate limit (matches.go), as the compiled rule
// has them. TraceSpec, EvalSpec and `nodefw trace` take each as under the
// limit.
var statefulMatches = []statefulMatch{limitMatches[1], limitMatches[0]}

// statefulMismatch is the first stateful match of the rule that a packet
// under every limit fails, or nil and a note per limit the packet was
// taken to be under.
func statefulMismatch(r *v1alpha1.NodeFirewallRule) (*Mismatch, []string) {
	var notes []string
	for _, m := range statefulMatches {
		set, matches, note := m.underLimit(r)
		if !set {
			continue
		}
		if !matches {
			return &Mismatch{Field: m.field, Want: "over the limit", Got: "under the limit (assumed: " + note + ")"}, notes
		}
		notes = append(notes, "assumed under the limit: "+note)
	}
	return nil, notes
}
