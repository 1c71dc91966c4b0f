package nft

import (
	"fmt"

	"github.com/google/nftables"
)

// replaceTable sends the one batch that replaces the table: add it (so
// that deleting it cannot fail), delete it, then add it again with its
// sets, chains and rules, every set before the rules that use it. The
// named sets take their names in slot 0.
func (p *Programmer) replaceTable(c *nftables.Conn, pl *plan) (ApplyStats, error) {
	t := p.tableRef()
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	// Batch begin and end, and the three table messages.
	stats := ApplyStats{Batches: 1, Messages: 5, Bytes: pl.bytes}
	for _, ns := range pl.named {
		msgs, err := queueNamedSet(c, t, ns, ns.set.Name)
		if err != nil {
			p.redial()
			return ApplyStats{}, fmt.Errorf("nft: set %s: %w", ns.set.Name, err)
		}
		stats.Messages += msgs
		stats.ElementsAdded += len(ns.elems)
	}
	msgs, err := queueChains(c, t, pl, 0)
	if err != nil {
		// Drop the half-built batch with the connection.
		p.redial()
		return ApplyStats{}, err
	}
	stats.Messages += msgs
	if err := p.sizeBuffers(pl.bytes, pl.msgs); err != nil {
		return ApplyStats{}, err
	}
	if err := c.Flush(); err != nil {
		p.redial()
		return ApplyStats{}, fmt.Errorf("nft: programming table inet %s: %w", p.table, err)
	}
	return stats, nil
}

// deleteTable sends the batch that deletes the table: add it (so that
// deleting a missing table cannot fail), then delete it.
func (p *Programmer) deleteTable(c *nftables.Conn) error {
	t := p.tableRef()
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		p.redial()
		return fmt.Errorf("nft: deleting table inet %s: %w", p.table, err)
	}
	return nil
}
