package nft

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
)

// rewriteStaged rewrites the table in two transactions: the first adds the
// named sets of the new ruleset, in the slot the live rules do not look
// up, with all their elements; the second replaces the rules of every
// chain (flushing and refilling the chains that stay, deleting those that
// go, adding new ones), sets the chain policies and deletes the named sets
// the new rules do not use. Only the second changes what packets meet, all
// at once. If it fails, the sets the first added are deleted again. It
// returns the slot of the named sets it wrote.
func (p *Programmer) rewriteStaged(c *nftables.Conn, pl *plan) (int, ApplyStats, error) {
	live, err := p.listLive(c)
	if err != nil {
		return 0, ApplyStats{}, err
	}
	slot, ok := stagingSlot(pl, live)
	if !ok {
		rules, err := p.readRules(c, live.chains)
		if err != nil {
			return 0, ApplyStats{}, err
		}
		slot = 1 - slotOf(pl, rules)
	}
	rw := planStagedRewrite(pl, live, slot)
	stats := ApplyStats{Bytes: pl.bytes}
	if len(pl.named) > 0 {
		if err := p.stageSets(c, pl, rw, &stats); err != nil {
			return 0, ApplyStats{}, err
		}
	}
	if err := p.queueSwitch(c, pl, rw, &stats); err != nil {
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

// stageSets sends the first transaction of a staged rewrite: the plan's
// named sets, filled, under their names in the staging slot, each in
// place of a leftover of that name.
func (p *Programmer) stageSets(c *nftables.Conn, pl *plan, rw stagedRewrite, stats *ApplyStats) error {
	t := p.tableRef()
	c.AddTable(t)
	stats.Messages += 3
	for _, ns := range pl.named {
		name := kernelName(ns.set.Name, rw.slot)
		if rw.leftovers[name] {
			c.DelSet(&nftables.Set{Table: t, Name: name})
			stats.Messages++
		}
		msgs, err := queueNamedSet(c, t, ns, name)
		if err != nil {
			p.redial()
			return fmt.Errorf("nft: set %s: %w", ns.set.Name, err)
		}
		stats.Messages += msgs
		stats.ElementsAdded += len(ns.elems)
	}
	if err := p.sizeBuffers(pl.bytes, pl.msgs); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		p.redial()
		return fmt.Errorf("nft: adding the sets of table inet %s: %w", p.table, err)
	}
	stats.Batches++
	return nil
}

// queueSwitch queues the second transaction of a staged rewrite, the one
// that switches every rule over: the live chains flushed, those the plan
// cannot reuse deleted, the named sets the new rules do not use deleted,
// and the plan's chains and rules added.
func (p *Programmer) queueSwitch(c *nftables.Conn, pl *plan, rw stagedRewrite, stats *ApplyStats) error {
	t := p.tableRef()
	c.AddTable(t)
	stats.Messages += 3
	for _, ch := range rw.flushChains {
		c.FlushChain(ch)
		stats.Messages++
	}
	for _, ch := range rw.deleteChains {
		c.DelChain(ch)
		stats.Messages++
	}
	for _, name := range rw.deleteSets {
		c.DelSet(&nftables.Set{Table: t, Name: name})
		stats.Messages++
	}
	msgs, err := queueChains(c, t, pl, rw.slot)
	if err != nil {
		p.redial()
		return err
	}
	stats.Messages += msgs
	return p.sizeBuffers(pl.bytes, pl.msgs)
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
