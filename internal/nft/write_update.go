package nft

import (
	"fmt"
	"time"

	"github.com/google/nftables"
)

// updateElements sends, in one batch, the element changes of an
// incremental update (see planSetUpdates): for each set, deletions first,
// so that an added element may take the place of a deleted one it
// overlaps.
func (p *Programmer) updateElements(c *nftables.Conn, updates []setUpdate) (ApplyStats, error) {
	t := p.tableRef()
	stats := ApplyStats{Incremental: true, Batches: 1, Messages: 2}
	for _, u := range updates {
		s := *u.set
		s.Table, s.ID, s.Name = t, 0, u.name
		for _, op := range []struct {
			elems []nftables.SetElement
			queue func(*nftables.Set, []nftables.SetElement) error
			count *int
		}{{u.del, c.SetDeleteElements, &stats.ElementsDeleted}, {u.add, c.SetAddElements, &stats.ElementsAdded}} {
			msgs, size, err := queueElements(&s, op.elems, op.queue)
			if err != nil {
				return ApplyStats{}, err
			}
			stats.Messages += msgs
			stats.Bytes += size + 64*msgs
			*op.count += len(op.elems)
		}
	}
	if err := p.sizeBuffers(stats.Bytes, stats.Messages); err != nil {
		return ApplyStats{}, err
	}
	start := time.Now()
	if err := c.Flush(); err != nil {
		return ApplyStats{}, fmt.Errorf("nft: updating sets of table inet %s: %w", p.table, err)
	}
	stats.Flush = time.Since(start)
	return stats, nil
}
