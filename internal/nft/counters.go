package nft

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// RuleCounter is the packet and byte count of one rule, read from the kernel.
type RuleCounter struct {
	Chain   string
	Comment string
	Packets uint64
	Bytes   uint64
}

// Counters reads the counter of every rule in the table that has one, in
// chain and rule order. Rules that share a comment (a log rule and its
// verdict rule) are reported separately.
func (p *Programmer) Counters() ([]RuleCounter, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.connLocked()
	if err != nil {
		return nil, err
	}
	kt, err := p.findTable()
	if err != nil || kt == nil {
		return nil, err
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, err
	}
	var out []RuleCounter
	for _, ch := range chains {
		if ch.Table.Name != p.table {
			continue
		}
		rules, err := c.GetRules(kt, ch)
		if err != nil {
			return nil, err
		}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					out = append(out, RuleCounter{Chain: ch.Name, Comment: comment, Packets: ctr.Packets, Bytes: ctr.Bytes})
					break
				}
			}
		}
	}
	return out, nil
}
