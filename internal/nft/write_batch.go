package nft

import (
	"fmt"

	"github.com/google/nftables"
)

// maxElemChunk bounds the encoded set elements per netlink message: the
// element list is one netlink attribute, whose length is 16 bits.
const maxElemChunk = 60 << 10

func (p *Programmer) tableRef() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: p.table}
}

// queueChains queues the plan's chains, with their policies, and their
// rules with the anonymous sets they bind; named set lookups point at
// slot. A chain that exists is updated (its policy) rather than created.
// It returns the messages queued.
func queueChains(c *nftables.Conn, t *nftables.Table, pl *plan, slot int) (int, error) {
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
			for _, as := range kr.sets {
				n, err := queueAnonSet(c, t, as)
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

// queueNamedSet queues a named set, under the kernel name name, and its
// elements in chunks, and returns the number of messages queued.
func queueNamedSet(c *nftables.Conn, t *nftables.Table, ns namedSet, name string) (int, error) {
	s := *ns.set
	s.Table = t
	s.Name = name
	if err := c.AddSet(&s, nil); err != nil {
		return 0, err
	}
	msgs, _, err := queueElements(&s, ns.elems, c.SetAddElements)
	return 1 + msgs, err
}

// queueAnonSet queues an anonymous set with its elements, and returns the
// number of messages queued. Elements go in chunks that fit a netlink
// attribute, all before the rule that binds the set and all in the same
// batch.
func queueAnonSet(c *nftables.Conn, t *nftables.Table, as anonSet) (int, error) {
	s := *as.set
	s.Table = t
	if as.size <= maxElemChunk {
		return 2, c.AddSet(&s, as.elems)
	}
	// No elements with the set itself: its size hint stays 0 (no limit),
	// since the hint would otherwise cap the set at the first chunk.
	if err := c.AddSet(&s, nil); err != nil {
		return 0, err
	}
	// The library refuses to add elements to an anonymous set after its
	// creation; the kernel allows it until a rule binds the set. The named
	// view refers to the same set by name and batch ID.
	named := s
	named.Anonymous = false
	msgs, _, err := queueElements(&named, as.elems, c.SetAddElements)
	return 1 + msgs, err
}

// queueElements queues elements in messages of at most maxElemChunk bytes
// of elements each, and returns the messages and bytes queued.
func queueElements(s *nftables.Set, elems []nftables.SetElement, queue func(*nftables.Set, []nftables.SetElement) error) (msgs, size int, err error) {
	start, chunk := 0, 0
	for i, e := range elems {
		n := elemSize(e)
		if chunk+n > maxElemChunk && i > start {
			if err := queue(s, elems[start:i]); err != nil {
				return 0, 0, err
			}
			msgs++
			start, chunk = i, 0
		}
		chunk += n
		size += n
	}
	if start < len(elems) {
		if err := queue(s, elems[start:]); err != nil {
			return 0, 0, err
		}
		msgs++
	}
	return msgs, size, nil
}
