package nft

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/nodefw/nodefw/internal/compile"
)

// plan is a Ruleset encoded for the kernel: what a full rewrite sends, and
// what Drift compares the table with. Building it touches no kernel.
type plan struct {
	table  string
	chains []kernelChain
	named  []namedSet
	byName map[string]int // index in named
	sets   int            // anonymous sets
	ids    uint32         // set IDs handed out in the batch
	msgs   int            // netlink messages in the batch
	bytes  int            // approximate batch size
}

// kernelChain is one base chain and its rules.
type kernelChain struct {
	name     string
	hook     nftables.ChainHook
	priority nftables.ChainPriority
	policy   nftables.ChainPolicy
	rules    []kernelRule
}

// kernelRule is one rule as sent to the kernel.
type kernelRule struct {
	exprs []expr.Any
	sets  []anonSet
	udata []byte
	size  int // approximate encoded size, in bytes
}

// anonSet is an anonymous, constant set of one rule, and its elements.
type anonSet struct {
	set   *nftables.Set
	elems []nftables.SetElement
	size  int // encoded size of the elements, in bytes
}

// namedSet is one of the ruleset's named sets: a concatenated interval
// set (the kernel's pipapo), or a hash set of exact keys, that lookup rules
// refer to by name. Its elements can change without touching the rules.
type namedSet struct {
	set   *nftables.Set
	elems []nftables.SetElement
	size  int // encoded size of the elements, in bytes
	// loads fill consecutive registers with the key's fields, from
	// register 1 on, where the lookup reads the key.
	loads []expr.Any
	// family is the IP family of the packets the set is for.
	family compile.Family
	// meter says the set is a meter: a dynamic set the kernel fills from
	// rules' per-source limits, without elements of the plan's, whose
	// elements drift checks and updates leave alone.
	meter bool
	// peer says the set is a peer set (see plan_peers.go): one address,
	// half-open intervals, changed by whole intervals.
	peer bool
}

// buildPlan encodes a ruleset for table: its named sets first, since
// rules look them up, then its chains.
func buildPlan(rs *compile.Ruleset, table string) (*plan, error) {
	if rs == nil {
		return nil, errors.New("nil ruleset")
	}
	p := &plan{table: table, msgs: 3, byName: map[string]int{}}
	for i := range rs.Sets {
		if err := p.encodeNamedSet(&rs.Sets[i]); err != nil {
			return nil, fmt.Errorf("set %q: %w", rs.Sets[i].Name, err)
		}
	}
	for _, m := range rs.Meters {
		if err := p.encodeMeter(m); err != nil {
			return nil, fmt.Errorf("meter %q: %w", m.Name, err)
		}
	}
	for i := range rs.PeerSets {
		if err := p.encodePeerSet(&rs.PeerSets[i]); err != nil {
			return nil, fmt.Errorf("peer set %q: %w", rs.PeerSets[i].Name, err)
		}
	}
	seen := map[string]bool{}
	for i := range rs.Chains {
		c := &rs.Chains[i]
		if c.Name == "" {
			return nil, fmt.Errorf("chain %d has no name", i)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("chain %q appears twice", c.Name)
		}
		seen[c.Name] = true
		kc, err := p.encodeChain(c)
		if err != nil {
			return nil, err
		}
		p.chains = append(p.chains, kc)
	}
	p.bytes += 1024 * len(p.chains)
	return p, nil
}

// encodeChain encodes a base chain, its hook, policy and rules.
func (p *plan) encodeChain(c *compile.Chain) (kernelChain, error) {
	kc := kernelChain{name: c.Name, priority: nftables.ChainPriority(c.Priority)}
	switch c.Hook {
	case compile.HookInput:
		kc.hook = *nftables.ChainHookInput
	case compile.HookForward:
		kc.hook = *nftables.ChainHookForward
	case compile.HookOutput:
		kc.hook = *nftables.ChainHookOutput
	case compile.HookPreRouting:
		kc.hook = *nftables.ChainHookPrerouting
	default:
		return kernelChain{}, fmt.Errorf("chain %q: unknown hook %q", c.Name, c.Hook)
	}
	switch c.Policy {
	case compile.VerdictAccept:
		kc.policy = nftables.ChainPolicyAccept
	case compile.VerdictDrop:
		kc.policy = nftables.ChainPolicyDrop
	default:
		return kernelChain{}, fmt.Errorf("chain %q: policy must be accept or drop, not %q", c.Name, c.Policy)
	}
	p.msgs++
	for j := range c.Rules {
		rules, err := p.encodeRule(&c.Rules[j])
		if err != nil {
			return kernelChain{}, fmt.Errorf("chain %q rule %d (%s): %w", c.Name, j, c.Rules[j].Comment, err)
		}
		kc.rules = append(kc.rules, rules...)
	}
	return kc, nil
}
