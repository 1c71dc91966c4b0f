package nft

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// slotSuffix ends the kernel names of the named sets in slot 1; slot 0
// uses the ruleset's names as they are. A full rewrite fills the named
// sets of the slot the live rules do not use and commits them in a first
// transaction, then switches every rule over in a second one. The packet
// path only changes in the second transaction, and by then every set it
// looks up is committed with all its elements: the kernel publishes a new
// generation before it swaps in the new contents of a concatenated
// interval (pipapo) set, so a set created and filled in the same
// transaction as its rules can miss lookups for a moment after the
// commit. Ruleset set names never end in this suffix.
const slotSuffix = "-b"

// kernelName is the name of a named set in the kernel, in a slot.
func kernelName(name string, slot int) string {
	if slot == 1 {
		return name + slotSuffix
	}
	return name
}

// hasKernel reports whether name is the kernel name of one of the plan's
// named sets in slot.
func (p *plan) hasKernel(name string, slot int) bool {
	if slot == 1 {
		base, ok := strings.CutSuffix(name, slotSuffix)
		if !ok {
			return false
		}
		name = base
	}
	return p.has(name)
}

// slotOf tells which slot the live rules look up the plan's named sets
// in: the one of which they reference more sets. After an interrupted
// rewrite both slots may exist; only the rules tell which one is live.
func slotOf(pl *plan, rules map[string][]*nftables.Rule) int {
	var in [2]int
	for _, rs := range rules {
		for _, r := range rs {
			for _, e := range r.Exprs {
				l, ok := e.(*expr.Lookup)
				if !ok {
					continue
				}
				switch {
				case pl.hasKernel(l.SetName, 1):
					in[1]++
				case pl.hasKernel(l.SetName, 0):
					in[0]++
				}
			}
		}
	}
	if in[1] > in[0] {
		return 1
	}
	return 0
}

// ruleExprs returns a rule's expressions with its named set lookups
// pointing at the sets of slot.
func (p *plan) ruleExprs(kr *kernelRule, slot int) []expr.Any {
	if slot == 0 || len(p.named) == 0 {
		return kr.exprs
	}
	var out []expr.Any
	for i, e := range kr.exprs {
		l, ok := e.(*expr.Lookup)
		if !ok || !p.has(l.SetName) {
			continue
		}
		if out == nil {
			out = append([]expr.Any(nil), kr.exprs...)
		}
		renamed := *l
		renamed.SetName = kernelName(l.SetName, slot)
		renamed.SetID = 0
		out[i] = &renamed
	}
	if out == nil {
		return kr.exprs
	}
	return out
}

// liveObjects are the chains and sets the kernel's table holds now.
type liveObjects struct {
	exists bool
	chains []*nftables.Chain
	sets   []*nftables.Set // named sets only
}

func (lo *liveObjects) setNames() map[string]bool {
	names := make(map[string]bool, len(lo.sets))
	for _, s := range lo.sets {
		names[s.Name] = true
	}
	return names
}

// listLive lists the table's chains and named sets, without their rules
// and elements.
func (p *Programmer) listLive(c *nftables.Conn) (*liveObjects, error) {
	kt, err := p.findTable()
	if err != nil || kt == nil {
		return &liveObjects{}, err
	}
	lo := &liveObjects{exists: true}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nft: listing chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == p.table {
			lo.chains = append(lo.chains, ch)
		}
	}
	sets, err := c.GetSets(kt)
	if err != nil {
		return nil, fmt.Errorf("nft: listing sets: %w", err)
	}
	for _, s := range sets {
		if !s.Anonymous {
			lo.sets = append(lo.sets, s)
		}
	}
	return lo, nil
}

// stagingSlot picks the slot for a full rewrite: the one whose set names
// the live table uses least, so that the live rules keep their sets until
// the switch. Names of that slot that exist anyway are leftovers of an
// interrupted rewrite and are deleted first. When both slots hold the
// plan's sets, the live rules are read to find the one they use.
func (p *Programmer) stagingSlot(c *nftables.Conn, pl *plan, live *liveObjects) (int, error) {
	names := live.setNames()
	var taken [2]int
	for _, ns := range pl.named {
		for slot := range taken {
			if names[kernelName(ns.set.Name, slot)] {
				taken[slot]++
			}
		}
	}
	switch {
	case taken[0] < taken[1]:
		return 0, nil
	case taken[1] < taken[0]:
		return 1, nil
	case taken[0] == 0:
		return 0, nil
	}
	rules := map[string][]*nftables.Rule{}
	for _, ch := range live.chains {
		rs, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return 0, fmt.Errorf("nft: listing rules of chain %s: %w", ch.Name, err)
		}
		rules[ch.Name] = rs
	}
	return 1 - slotOf(pl, rules), nil
}

// applyStaged rewrites the table in two transactions: the first adds the
// named sets of the new ruleset, in the slot the live rules do not look
// up, with all their elements; the second replaces the rules of every
// chain (flushing and refilling the chains that stay, deleting those that
// go, adding new ones), sets the chain policies and deletes the named sets
// the new rules do not use. Only the second changes what packets meet, all
// at once. If it fails, the sets the first added are deleted again.
func (p *Programmer) applyStaged(c *nftables.Conn, pl *plan, live *liveObjects) (int, ApplyStats, error) {
	t := p.tableRef()
	slot, err := p.stagingSlot(c, pl, live)
	if err != nil {
		return 0, ApplyStats{}, err
	}
	stats := ApplyStats{Bytes: pl.bytes}
	if len(pl.named) > 0 {
		c.AddTable(t)
		stats.Messages += 3
		stale := live.setNames()
		for _, ns := range pl.named {
			name := kernelName(ns.set.Name, slot)
			if stale[name] {
				c.DelSet(&nftables.Set{Table: t, Name: name})
				stats.Messages++
			}
			msgs, err := addNamedSet(c, t, ns, name)
			if err != nil {
				p.redial()
				return 0, ApplyStats{}, fmt.Errorf("nft: set %s: %w", ns.set.Name, err)
			}
			stats.Messages += msgs
			stats.ElementsAdded += len(ns.elems)
		}
		if err := p.sizeBuffers(pl.bytes, pl.msgs); err != nil {
			return 0, ApplyStats{}, err
		}
		if err := c.Flush(); err != nil {
			p.redial()
			return 0, ApplyStats{}, fmt.Errorf("nft: adding the sets of table inet %s: %w", p.table, err)
		}
		stats.Batches++
	}

	c.AddTable(t)
	stats.Messages += 3
	var msgs int
	for _, ch := range live.chains {
		c.FlushChain(ch)
		stats.Messages++
	}
	for _, ch := range live.chains {
		if kc := pl.chain(ch.Name); kc != nil && sameHook(ch, kc) {
			continue
		}
		c.DelChain(ch)
		stats.Messages++
	}
	for _, s := range live.sets {
		if !pl.hasKernel(s.Name, slot) {
			c.DelSet(&nftables.Set{Table: t, Name: s.Name})
			stats.Messages++
		}
	}
	msgs, err = p.addChains(c, t, pl, slot)
	if err != nil {
		p.redial()
		return 0, ApplyStats{}, err
	}
	stats.Messages += msgs
	if err := p.sizeBuffers(pl.bytes, pl.msgs); err != nil {
		return 0, ApplyStats{}, err
	}
	if err := c.Flush(); err != nil {
		p.redial()
		err = fmt.Errorf("nft: programming table inet %s: %w", p.table, err)
		if stats.Batches > 0 {
			err = errors.Join(err, p.unstage(pl, live, slot))
		}
		return 0, ApplyStats{}, err
	}
	stats.Batches++
	return slot, stats, nil
}

// unstage deletes the sets a failed rewrite added, and the table if the
// rewrite created it.
func (p *Programmer) unstage(pl *plan, live *liveObjects, slot int) error {
	c, err := p.connLocked()
	if err != nil {
		return err
	}
	t := p.tableRef()
	if !live.exists {
		c.AddTable(t)
		c.DelTable(t)
	} else {
		for _, ns := range pl.named {
			c.DelSet(&nftables.Set{Table: t, Name: kernelName(ns.set.Name, slot)})
		}
	}
	if err := c.Flush(); err != nil {
		p.redial()
		return fmt.Errorf("nft: removing the sets of a failed rewrite: %w", err)
	}
	return nil
}

// chain returns the plan's chain named name, or nil.
func (p *plan) chain(name string) *kernelChain {
	for i := range p.chains {
		if p.chains[i].name == name {
			return &p.chains[i]
		}
	}
	return nil
}

// sameHook reports whether a live chain can be kept for a planned one: a
// filter base chain on the same hook at the same priority. Its policy is
// set again with its rules.
func sameHook(ch *nftables.Chain, kc *kernelChain) bool {
	return ch.Type == nftables.ChainTypeFilter && ch.Hooknum != nil && *ch.Hooknum == kc.hook &&
		ch.Priority != nil && *ch.Priority == kc.priority
}

// addChains queues the plan's chains, with their policies, and their rules
// with the anonymous sets they bind; named set lookups point at slot. A
// chain that exists is updated (its policy) rather than created. It
// returns the messages queued.
func (p *Programmer) addChains(c *nftables.Conn, t *nftables.Table, pl *plan, slot int) (int, error) {
	msgs := 0
	for i := range pl.chains {
		kc := &pl.chains[i]
		ch := c.AddChain(&nftables.Chain{
			Name:     kc.name,
			Table:    t,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  &kc.hook,
			Priority: &kc.priority,
			Policy:   &kc.policy,
		})
		msgs++
		for j := range kc.rules {
			kr := &kc.rules[j]
			for _, ks := range kr.sets {
				n, err := addSet(c, t, ks)
				if err != nil {
					return 0, fmt.Errorf("nft: chain %s: %w", kc.name, err)
				}
				msgs += n
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: pl.ruleExprs(kr, slot), UserData: kr.udata})
			msgs++
		}
	}
	return msgs, nil
}
