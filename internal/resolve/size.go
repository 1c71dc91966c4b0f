package resolve

import (
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// DefaultRequestLimit is the largest NodeFirewall the controller writes:
// etcd's default request limit (1.5 MiB, --max-request-bytes) less a
// margin for what the API server adds to the object (managed fields,
// resource version, timestamps) and for the request's own framing.
const DefaultRequestLimit = 1536*1024 - 64*1024

// TooLarge is a NodeFirewall kept out of the writes because its request
// would exceed the API server's size limit.
type TooLarge struct {
	// Node is the node whose NodeFirewall it is.
	Node string
	// Bytes is the size of the object as serialized for the request.
	Bytes int
	// Limit is the size it may not exceed.
	Limit int
	// Policies are the policies that contribute to it.
	Policies []string
}

func (t TooLarge) String() string {
	return fmt.Sprintf("NodeFirewall %s would be %d bytes, over the limit of %d bytes", t.Node, t.Bytes, t.Limit)
}

// HoldTooLarge moves the creates and updates whose serialized size exceeds
// limit out of w and into the result, so that nothing partial is written
// and one oversized node does not stop the writes of the others: its
// existing NodeFirewall, and with it its agent's ruleset, stays as it is.
func (w *Writes) HoldTooLarge(limit int) []TooLarge {
	var held []TooLarge
	keep := func(list []*fwv1.NodeFirewall) []*fwv1.NodeFirewall {
		kept := list[:0]
		for _, nfw := range list {
			if n := SerializedSize(nfw); n > limit {
				held = append(held, TooLarge{Node: nfw.Name, Bytes: n, Limit: limit, Policies: PolicyNames(nfw)})
				continue
			}
			kept = append(kept, nfw)
		}
		return kept
	}
	w.Create = keep(w.Create)
	w.Update = keep(w.Update)
	return held
}

// SerializedSize is the size of nfw as the client sends it (JSON).
func SerializedSize(nfw *fwv1.NodeFirewall) int {
	b, err := json.Marshal(nfw)
	if err != nil {
		// A NodeFirewall always marshals; count it as too large rather
		// than write what could not be measured.
		return int(^uint(0) >> 1)
	}
	return len(b)
}

// Problems reports t on every policy that contributes to the node.
func (t TooLarge) Problems() []Problem {
	problems := make([]Problem, 0, len(t.Policies))
	for _, p := range t.Policies {
		problems = append(problems, Problem{Policy: p, Reason: fwv1.ReasonNodeFirewallTooLarge, Message: t.String() + "; the node keeps its last ruleset"})
	}
	return problems
}

// PolicyNames are the policies a NodeFirewall lists, in evaluation order.
func PolicyNames(nfw *fwv1.NodeFirewall) []string {
	names := make([]string, 0, len(nfw.Spec.Policies))
	for _, ref := range nfw.Spec.Policies {
		names = append(names, ref.Name)
	}
	return names
}

// RevisionTooLarge is a policy's revision kept out of the writes because
// its request would exceed the API server's size limit.
type RevisionTooLarge struct {
	// Policy is the policy whose rules it holds.
	Policy string
	// Revision is the revision's name.
	Revision string
	// Bytes is the size of the revision as serialized for the request.
	Bytes int
	// Limit is the size it may not exceed.
	Limit int
	// Refused tells that the API server refused it as too large, its own
	// limit being lower than Limit.
	Refused bool
}

func (t RevisionTooLarge) String() string {
	over := fmt.Sprintf("over the limit of %d bytes", t.Limit)
	if t.Refused {
		over = fmt.Sprintf("refused by the API server as too large (the controller's limit is %d bytes)", t.Limit)
	}
	return fmt.Sprintf("ControllerRevision %s, which would hold the policy's rules, is %d bytes, %s; every node keeps the generation of the policy it has",
		t.Revision, t.Bytes, over)
}

// Problem reports t on its policy.
func (t RevisionTooLarge) Problem() Problem {
	return Problem{Policy: t.Policy, Reason: fwv1.ReasonRevisionTooLarge, Message: t.String()}
}

// RevisionSize is the size of a revision as the client sends it (JSON).
func RevisionSize(cr *appsv1.ControllerRevision) int {
	b, err := json.Marshal(cr)
	if err != nil {
		return int(^uint(0) >> 1)
	}
	return len(b)
}

// holdOversizedRevisions holds, on every node, the policies whose revision
// is over limit (when limit is set) or was refused by the API server: the
// revision is not written, and no node is moved to it.
func holdOversizedRevisions(policies []preparedPolicy, limit int, refused map[string]int) []Problem {
	var problems []Problem
	for i := range policies {
		pp := &policies[i]
		if pp.revision == nil {
			continue
		}
		t := RevisionTooLarge{Policy: pp.policy.Name, Revision: pp.revision.Name, Limit: limit}
		if n, ok := refused[pp.revision.Name]; ok {
			t.Bytes, t.Refused = n, true
		} else if n := RevisionSize(pp.revision); limit > 0 && n > limit {
			t.Bytes = n
		} else {
			continue
		}
		pp.held = true
		problems = append(problems, t.Problem())
	}
	return problems
}

// SetTooLarge is a managed NodeFirewallAddressSet kept out of the writes
// because its request would exceed the API server's size limit.
type SetTooLarge struct {
	// Set is the set's name.
	Set string
	// Bytes is the size of the set as serialized for the request.
	Bytes int
	// Limit is the size it may not exceed.
	Limit int
	// Refused tells that the API server refused it as too large.
	Refused bool
}

func (t SetTooLarge) String() string {
	over := fmt.Sprintf("over the limit of %d bytes", t.Limit)
	if t.Refused {
		over = fmt.Sprintf("refused by the API server as too large (the controller's limit is %d bytes)", t.Limit)
	}
	return fmt.Sprintf("NodeFirewallAddressSet %s, which holds a node peer's addresses, would be %d bytes, %s; the set keeps the addresses it has (none if it is new)",
		t.Set, t.Bytes, over)
}

// Problems reports t on every policy with a node peer whose set it is.
func (t SetTooLarge) Problems(policies []fwv1.NodeFirewallPolicy) []Problem {
	var problems []Problem
	for i := range policies {
		p := &policies[i]
		if usesSet(p, t.Set) {
			problems = append(problems, Problem{Policy: p.Name, Reason: fwv1.ReasonAddressSetTooLarge, Message: t.String()})
		}
	}
	return problems
}

// usesSet tells whether a node peer of one of p's rules is held in set.
func usesSet(p *fwv1.NodeFirewallPolicy, set string) bool {
	for _, r := range p.Spec.Rules {
		for _, peer := range append(append([]fwv1.Peer(nil), r.From...), r.To...) {
			if !peer.IsNodePeer() {
				continue
			}
			if name, err := peer.SetName(); err == nil && name == set {
				return true
			}
		}
	}
	return false
}

// SetSize is the size of a set as the client sends it (JSON).
func SetSize(s *fwv1.NodeFirewallAddressSet) int {
	b, err := json.Marshal(s)
	if err != nil {
		return int(^uint(0) >> 1)
	}
	return len(b)
}

// HoldTooLarge moves the creates and updates of managed sets whose
// serialized size exceeds limit out of w and into the result: a set is
// written whole or not at all, and an existing one keeps its addresses.
func (w *SetWrites) HoldTooLarge(limit int) []SetTooLarge {
	var held []SetTooLarge
	keep := func(list []*fwv1.NodeFirewallAddressSet) []*fwv1.NodeFirewallAddressSet {
		kept := make([]*fwv1.NodeFirewallAddressSet, 0, len(list))
		for _, s := range list {
			if n := SetSize(s); n > limit {
				held = append(held, SetTooLarge{Set: s.Name, Bytes: n, Limit: limit})
				continue
			}
			kept = append(kept, s)
		}
		return kept
	}
	w.Create = keep(w.Create)
	w.Update = keep(w.Update)
	return held
}
