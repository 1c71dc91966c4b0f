package nft

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// liveObjects are the chains and sets the kernel's table holds now.
type liveObjects struct {
	exists bool
	chains []*nftables.Chain
	sets   []*nftables.Set // named sets only
}

// listLive lists the table's chains and named sets, without their rules
// and elements.
func (p *Programmer) listLive(c *nftables.Conn) (*liveObjects, error) {
	kt, err := p.findTable()
	if err != nil || kt == nil {
		return &liveObjects{}, err
	}
	lo := &liveObjects{exists: true}
	if lo.chains, err = p.listChains(c); err != nil {
		return nil, err
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

// tableState is what the kernel holds in the table.
type tableState struct {
	chains map[string]*nftables.Chain
	rules  map[string][]*nftables.Rule
	anon   []*nftables.Set
	named  map[string]*nftables.Set
	elems  map[string][]nftables.SetElement
}

// readTable reads the table's chains, rules, sets and named set elements.
func (p *Programmer) readTable(c *nftables.Conn, kt *nftables.Table) (*tableState, error) {
	st := &tableState{
		chains: map[string]*nftables.Chain{},
		named:  map[string]*nftables.Set{},
		elems:  map[string][]nftables.SetElement{},
	}
	chains, err := p.listChains(c)
	if err != nil {
		return nil, err
	}
	for _, ch := range chains {
		st.chains[ch.Name] = ch
	}
	if st.rules, err = p.readRules(c, chains); err != nil {
		return nil, err
	}
	sets, err := c.GetSets(kt)
	if err != nil {
		return nil, fmt.Errorf("nft: listing sets: %w", err)
	}
	for _, s := range sets {
		if s.Anonymous {
			st.anon = append(st.anon, s)
			continue
		}
		st.named[s.Name] = s
		if s.Dynamic {
			// A meter: the kernel's elements, as many as it saw sources.
			continue
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("nft: listing elements of set %s: %w", s.Name, err)
		}
		st.elems[s.Name] = elems
	}
	return st, nil
}

// readCounters reads the counter of every rule in the table that has one,
// in chain and rule order, each rule named by its comment. A lookup in a
// set whose elements count stands for the counters of its elements, each
// named by the element's comment: the rule of the run it counts for.
func (p *Programmer) readCounters(c *nftables.Conn) ([]RuleCounter, error) {
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
			var lookup string
			counted := false
			for _, e := range r.Exprs {
				switch e := e.(type) {
				case *expr.Counter:
					out = append(out, RuleCounter{Chain: ch.Name, Comment: comment, Packets: e.Packets, Bytes: e.Bytes})
					counted = true
				case *expr.Lookup:
					lookup = e.SetName
				}
				if counted {
					break
				}
			}
			if counted || lookup == "" {
				continue
			}
			if out, err = appendElementCounters(c, out, kt, ch.Name, lookup); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// appendElementCounters appends the counters of a named set's elements
// that have one, each named by the element's comment.
func appendElementCounters(c *nftables.Conn, out []RuleCounter, kt *nftables.Table, chain, set string) ([]RuleCounter, error) {
	elems, err := c.GetSetElements(&nftables.Set{Table: kt, Name: set})
	if err != nil {
		return nil, fmt.Errorf("nft: listing elements of set %s: %w", set, err)
	}
	for _, e := range elems {
		if e.Counter != nil && !e.IntervalEnd {
			out = append(out, RuleCounter{Chain: chain, Comment: e.Comment, Packets: e.Counter.Packets, Bytes: e.Counter.Bytes})
		}
	}
	return out, nil
}

// findTable returns the kernel's table, or nil when it is missing.
func (p *Programmer) findTable() (*nftables.Table, error) {
	c, err := p.connLocked()
	if err != nil {
		return nil, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		p.redial()
		return nil, fmt.Errorf("nft: listing tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == p.table {
			return t, nil
		}
	}
	return nil, nil
}

// listChains lists the table's chains, without their rules.
func (p *Programmer) listChains(c *nftables.Conn) ([]*nftables.Chain, error) {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nft: listing chains: %w", err)
	}
	var out []*nftables.Chain
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == p.table {
			out = append(out, ch)
		}
	}
	return out, nil
}

// readRules reads the rules of chains, by chain name.
func (p *Programmer) readRules(c *nftables.Conn, chains []*nftables.Chain) (map[string][]*nftables.Rule, error) {
	rules := make(map[string][]*nftables.Rule, len(chains))
	for _, ch := range chains {
		rs, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, fmt.Errorf("nft: listing rules of chain %s: %w", ch.Name, err)
		}
		rules[ch.Name] = rs
	}
	return rules, nil
}
