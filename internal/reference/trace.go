package reference

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// Trace is how one chain of a node's firewall decides one packet: every
// step the packet meets, in the order the kernel meets them, up to and
// including the one that decides. TraceSpec makes it; EvalSpec is its
// verdict, so a trace explains exactly the verdict the differential tests
// hold the compiler and the kernel to.
type Trace struct {
	// Chain is the chain traced.
	Chain v1alpha1.Chain `json:"chain"`
	// Verdict is the chain's verdict on the packet.
	Verdict compile.Verdict `json:"verdict"`
	// Steps are the implicit accepts and the chain's rules the packet met,
	// in order, then the chain's default action if nothing decided before
	// it. The last step decided.
	Steps []Step `json:"steps"`
}

// Decider is the step that decided the verdict.
func (t Trace) Decider() Step { return t.Steps[len(t.Steps)-1] }

// StepKind says what a step of a trace is.
type StepKind string

const (
	// StepImplicit is one of the accepts every chain starts with.
	StepImplicit StepKind = "Implicit"
	// StepRule is one of the node's rules of the chain.
	StepRule StepKind = "Rule"
	// StepDefault is the chain's default action.
	StepDefault StepKind = "Default"
)

// Implicit names an accept that a chain makes ahead of every rule.
type Implicit string

const (
	// ImplicitEstablished accepts conntrack states Established and Related.
	ImplicitEstablished Implicit = "established"
	// ImplicitNotLocal accepts, on PreRouting, every packet whose
	// destination is not one of the node's addresses.
	ImplicitNotLocal Implicit = "not-local"
	// ImplicitLoopback accepts the loopback interface (PreRouting, Input
	// and Output).
	ImplicitLoopback Implicit = "loopback"
	// ImplicitNeighbourDiscovery accepts ICMPv6 neighbour discovery
	// (PreRouting, Input and Output).
	ImplicitNeighbourDiscovery Implicit = "neighbour-discovery"
	// ImplicitFailsafe accepts the agent's failsafe ports (inbound on
	// PreRouting and Input, outbound on Output).
	ImplicitFailsafe Implicit = "failsafe"
)

// DefaultName is what Step.Name calls a chain's default action.
const DefaultName = "default"

// Step is one implicit accept, rule or default action of a chain, and what
// it did with the packet.
type Step struct {
	Kind StepKind `json:"kind"`
	// Implicit names the accept of an Implicit step.
	Implicit Implicit `json:"implicit,omitempty"`
	// Policy and Rule name the rule of a Rule step; Position is its place
	// among the chain's rules, from 1, and Index its index in the spec's
	// rules.
	Policy   string `json:"policy,omitempty"`
	Rule     string `json:"rule,omitempty"`
	Position int    `json:"position,omitempty"`
	Index    int    `json:"-"`
	// Action is what the step does to a packet it matches; a Default step's
	// is the chain's default action.
	Action v1alpha1.Action `json:"action"`
	// Matched says the packet matched the step. A Default step matches
	// every packet that reaches it.
	Matched bool `json:"matched"`
	// Mismatch is the first of the step's matches the packet failed, when
	// it did not match.
	Mismatch *Mismatch `json:"mismatch,omitempty"`
	// Verdict is the step's verdict when it decided, VerdictNone when
	// evaluation went on.
	Verdict compile.Verdict `json:"verdict,omitempty"`
	// Notes say what else the step did or assumed: a log, an audited drop
	// that decided nothing, a stateful match taken as under its limit.
	Notes []string `json:"notes,omitempty"`
}

// Name names the step as `nodefw test` expects it: "policy/rule" for a
// rule, the name of an implicit accept, or "default".
func (s Step) Name() string {
	switch s.Kind {
	case StepRule:
		return s.Policy + "/" + s.Rule
	case StepImplicit:
		return string(s.Implicit)
	}
	return DefaultName
}

// Mismatch is a match a packet failed: the field of the rule, what the
// rule asks for and what the packet has.
type Mismatch struct {
	Field string `json:"field"`
	Want  string `json:"want"`
	Got   string `json:"got"`
}

func (m *Mismatch) String() string {
	return fmt.Sprintf("%s: packet has %s, wants %s", m.Field, m.Got, m.Want)
}

// TraceSpec is the reference semantics of a node's firewall, as the README
// states them, for one chain, step by step: the implicit accepts
// (established and related, loopback, ICMPv6 neighbour discovery, the
// failsafe ports), then the first of the chain's rules that matches
// decides, then the chain's default action. Rules of an audited policy
// that would drop or reject decide nothing; an audited chain's default is
// accept. Of opts it reads only the failsafes. It reads the spec directly,
// independently of the compiler.
func TraceSpec(spec v1alpha1.NodeFirewallSpec, opts compile.Options, chain v1alpha1.Chain, p Packet) Trace {
	return evaluate(spec, opts, chain, &p, true)
}

// evaluate walks the chain as TraceSpec says. Only with explain does it
// keep the steps that did not decide and say why they did not: EvalSpec,
// which the randomised tests call millions of times, wants the verdict
// alone, from the same walk.
func evaluate(spec v1alpha1.NodeFirewallSpec, opts compile.Options, chain v1alpha1.Chain, p *Packet, explain bool) Trace {
	t := Trace{Chain: chain}
	passed := func(s Step) {
		if explain {
			t.Steps = append(t.Steps, s)
		}
	}
	for _, a := range implicitAccepts(chain, opts) {
		s := Step{Kind: StepImplicit, Implicit: a.name, Action: v1alpha1.ActionAccept}
		if s.Mismatch, s.Notes = a.test(p); s.Mismatch != nil {
			passed(s)
			continue
		}
		s.Matched, s.Verdict = true, compile.VerdictAccept
		return t.decided(s)
	}
	position := 0
	for i := range spec.Rules {
		r := &spec.Rules[i]
		if r.Chain != chain {
			continue
		}
		position++
		s := Step{Kind: StepRule, Policy: r.Policy, Rule: r.Name, Position: position, Index: i, Action: r.Action}
		s.Mismatch, s.Notes = ruleMismatch(r, p, explain)
		if s.Mismatch == nil {
			// Peers, against the address sets the evaluation is given.
			s.Mismatch = peersMismatch(r, p, opts.AddressSets, explain)
		}
		if s.Matched = s.Mismatch == nil; !s.Matched {
			passed(s)
			continue
		}
		if r.Log && explain {
			s.Notes = append(s.Notes, logNote(r))
		}
		if r.Mode == v1alpha1.PolicyModeAudit && r.Action != v1alpha1.ActionAccept {
			if explain {
				s.Notes = append(s.Notes, fmt.Sprintf("policy %s is in Audit mode: the %s is only counted and logged, evaluation goes on", r.Policy, r.Action))
			}
			passed(s)
			continue
		}
		s.Verdict = ruleVerdict(r)
		return t.decided(s)
	}
	return t.decided(defaultStep(spec, chain))
}

// logNote says how a logged rule logs: as a line of the agent's log, at
// the rule's rate, with its label.
func logNote(r *v1alpha1.NodeFirewallRule) string {
	rate := r.LogRatePerMinute
	if rate <= 0 {
		rate = compile.LogRatePerMinute
	}
	note := fmt.Sprintf("logged by the agent, at most %d a minute", rate)
	if r.LogLabel != "" {
		note += ", label " + strconv.Quote(r.LogLabel)
	}
	return note
}

// decided ends a trace with the step that decided.
func (t Trace) decided(s Step) Trace {
	t.Steps = append(t.Steps, s)
	t.Verdict = s.Verdict
	return t
}

// defaultStep is the chain's default action as the packet meets it.
func defaultStep(spec v1alpha1.NodeFirewallSpec, chain v1alpha1.Chain) Step {
	s := Step{Kind: StepDefault, Matched: true, Action: v1alpha1.ActionAccept, Verdict: compile.VerdictAccept}
	switch d := spec.DefaultActions.For(chain); {
	case d == "":
		s.Notes = []string{"no default action is set: Accept"}
	case d != v1alpha1.ChainPolicyDrop:
	case slices.Contains(spec.AuditedChains, chain):
		s.Action = v1alpha1.ActionDrop
		s.Notes = []string{"the Drop comes from a policy in Audit mode: it is only counted and logged"}
	default:
		s.Action, s.Verdict = v1alpha1.ActionDrop, compile.VerdictDrop
	}
	return s
}
