// Package nft programs a compile.Ruleset into the kernel as one nftables
// table of family inet, over netlink. What packets meet changes in a single
// transaction, so the kernel never holds an empty or partial ruleset: one
// that replaces every rule (after a transaction that only adds the new
// named sets, which no rule uses yet), or, when only the elements of the
// ruleset's named sets change, one that deletes and adds just those
// elements. No other table is ever modified.
package nft

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nodefw/nodefw/internal/compile"
)

// minSocketBuffer is the least send and receive buffer of the netlink
// socket; Apply grows the buffers further for big batches.
const minSocketBuffer = 16 << 20

// maxSocketBuffer caps the buffers (the kernel doubles the value it is given).
const maxSocketBuffer = 1 << 30

// Programmer owns one nftables table in one network namespace.
type Programmer struct {
	table  string
	nsFile *os.File // nil for the current namespace

	mu     sync.Mutex
	closed bool
	conn   *nftables.Conn
	nl     *netlink.Conn // the socket under conn, for buffer sizing

	// mirror is the plan of the last batch the kernel committed, and
	// trusted says the kernel's table still holds it: cleared by any
	// failure and by a Drift that finds the table changed from outside.
	// Only a trusted mirror lets Apply send set elements alone.
	mirror  *plan
	trusted bool
	// applied is the ruleset the mirror was built from, as the caller
	// passed it: InSync compares with it before it builds a plan.
	applied *compile.Ruleset
	// slot is the slot of the mirror's named sets (see slotSuffix).
	slot int
	last ApplyStats
}

// ApplyStats describes the batch of the last successful Apply.
type ApplyStats struct {
	// Incremental says only set elements were sent; otherwise the whole
	// table was rewritten.
	Incremental bool
	// Batches counts the transactions: 1 for element updates and for
	// rewrites without named sets, 2 for a rewrite that first adds its
	// named sets.
	Batches int
	// Messages counts the netlink messages of the batches, their begin
	// and end included.
	Messages int
	// Bytes is the approximate size of the batch.
	Bytes int
	// ElementsAdded and ElementsDeleted count set elements sent.
	ElementsAdded, ElementsDeleted int
}

// LastApply describes the last successful Apply.
func (p *Programmer) LastApply() ApplyStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// New returns a Programmer for the inet table named table (compile.DefaultTable
// when empty) in the network namespace at netnsPath, or in the current
// namespace when netnsPath is empty. It opens one netlink socket, kept until
// Close.
func New(netnsPath, table string) (*Programmer, error) {
	if table == "" {
		table = compile.DefaultTable
	}
	if len(table) >= unix.NFT_TABLE_MAXNAMELEN {
		return nil, fmt.Errorf("nft: table name %q too long", table)
	}
	p := &Programmer{table: table}
	if netnsPath != "" {
		f, err := os.Open(netnsPath)
		if err != nil {
			return nil, fmt.Errorf("nft: opening network namespace: %w", err)
		}
		p.nsFile = f
	}
	if err := p.dial(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Table is the name of the table the Programmer owns.
func (p *Programmer) Table() string { return p.table }

// Close releases the netlink socket and the namespace handle.
func (p *Programmer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.mirror, p.trusted, p.applied = nil, false, nil
	var errs []error
	if p.conn != nil {
		errs = append(errs, p.conn.CloseLasting())
		p.conn, p.nl = nil, nil
	}
	if p.nsFile != nil {
		errs = append(errs, p.nsFile.Close())
		p.nsFile = nil
	}
	return errors.Join(errs...)
}

// dial opens the lasting netlink connection.
func (p *Programmer) dial() error {
	opts := []nftables.ConnOption{
		nftables.AsLasting(),
		nftables.WithSockOptions(func(c *netlink.Conn) error {
			p.nl = c
			return setBuffers(c, minSocketBuffer, minSocketBuffer)
		}),
	}
	if p.nsFile != nil {
		opts = append(opts, nftables.WithNetNSFd(int(p.nsFile.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nft: opening netlink: %w", err)
	}
	p.conn = c
	return nil
}

// redial replaces the connection after a failed batch: unread
// acknowledgements left on the old socket would confuse the next request.
func (p *Programmer) redial() {
	if p.conn != nil {
		_ = p.conn.CloseLasting()
		p.conn, p.nl = nil, nil
	}
	_ = p.dial()
}

func (p *Programmer) connLocked() (*nftables.Conn, error) {
	if p.closed {
		return nil, errors.New("nft: programmer is closed")
	}
	if p.conn == nil {
		if err := p.dial(); err != nil {
			return nil, err
		}
	}
	return p.conn, nil
}

// setBuffers sets the socket buffers, beyond the system maximum when the
// process may (CAP_NET_ADMIN), else as far as the maximum allows.
func setBuffers(c *netlink.Conn, snd, rcv int) error {
	snd, rcv = min(snd, maxSocketBuffer), min(rcv, maxSocketBuffer)
	if err := c.SetWriteBuffer(snd); err != nil {
		return err
	}
	if err := c.SetReadBuffer(rcv); err != nil {
		return err
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	return raw.Control(func(fd uintptr) {
		// Without the capability the plain settings above stand.
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, snd)
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcv)
	})
}

func (p *Programmer) tableRef() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: p.table}
}

func (p *Programmer) checkTable(rs *compile.Ruleset) error {
	if rs != nil && rs.Table != "" && rs.Table != p.table {
		return fmt.Errorf("nft: ruleset is for table %q, programmer owns %q", rs.Table, p.table)
	}
	return nil
}

// Apply makes the table rs. What packets meet changes in one netlink
// batch, which the kernel commits atomically. Other tables are not touched.
//
// When the table already holds the previous ruleset applied through this
// Programmer (nothing has failed since, and no Drift has seen it changed
// from outside) and rs differs from it only in the elements of its named
// sets, the batch carries just the elements to delete and to add: the
// rules, their counters and the other elements stay. Otherwise, and if that
// batch fails, the table is rewritten: a first batch adds rs's named sets,
// filled, under names the live rules do not use (see slotSuffix), and a
// second replaces every rule and deletes the sets no rule uses any more.
// If that fails too, one batch replaces the table whole.
//
// A model rule that both logs and has a verdict becomes two kernel rules,
// since an exceeded log limit would otherwise skip the verdict. When the
// kernel refuses the batch it keeps the previous table whole; when reading
// its answer fails (say, ENOBUFS) the batch may have been committed, and
// InSync tells.
func (p *Programmer) Apply(rs *compile.Ruleset) error {
	if err := p.checkTable(rs); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pl, err := buildPlan(rs, p.table)
	if err != nil {
		return fmt.Errorf("nft: %w", err)
	}
	c, err := p.connLocked()
	if err != nil {
		return err
	}
	if p.trusted && p.mirror != nil && sameShape(p.mirror, pl) {
		stats, err := p.applyElements(c, pl)
		if err == nil {
			p.mirror, p.last, p.applied = pl, stats, rs
			return nil
		}
		// Whatever went wrong, the full rewrite below repairs it; an
		// unchanged ruleset is rewritten too, which repairs what a change
		// from outside may have done since the last Drift.
		if !errors.Is(err, errNoChange) {
			p.trusted = false
			p.redial()
			if c, err = p.connLocked(); err != nil {
				return err
			}
		}
	}
	slot, stats, err := p.applyFull(c, pl)
	if err != nil {
		p.mirror, p.trusted = nil, false
		return err
	}
	p.mirror, p.trusted, p.slot, p.last, p.applied = pl, true, slot, stats, rs
	return nil
}

// applyFull rewrites the table: staged (see applyStaged), or, when that
// fails, in the one batch of replaceTable. It returns the slot of the
// named sets it wrote.
func (p *Programmer) applyFull(c *nftables.Conn, pl *plan) (int, ApplyStats, error) {
	live, err := p.listLive(c)
	if err == nil {
		var slot int
		var stats ApplyStats
		if slot, stats, err = p.applyStaged(c, pl, live); err == nil {
			return slot, stats, nil
		}
	}
	// Whatever the staged rewrite ran into (a table flag it cannot
	// change, objects it does not know), replacing the whole table does
	// not depend on what the table holds.
	p.redial()
	if c, err = p.connLocked(); err != nil {
		return 0, ApplyStats{}, err
	}
	stats, err := p.replaceTable(c, pl)
	return 0, stats, err
}

// replaceTable sends the one batch that replaces the table: add it (so
// that deleting it cannot fail), delete it, then add it again with its
// sets, chains and rules, every set before the rules that use it.
func (p *Programmer) replaceTable(c *nftables.Conn, pl *plan) (ApplyStats, error) {
	t := p.tableRef()
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	// Batch begin and end, and the three table messages.
	stats := ApplyStats{Batches: 1, Messages: 5, Bytes: pl.bytes}
	for _, ns := range pl.named {
		msgs, err := addNamedSet(c, t, ns, ns.set.Name)
		if err != nil {
			p.redial()
			return ApplyStats{}, fmt.Errorf("nft: set %s: %w", ns.set.Name, err)
		}
		stats.Messages += msgs
		stats.ElementsAdded += len(ns.elems)
	}
	msgs, err := p.addChains(c, t, pl, 0)
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

// sizeBuffers makes the socket buffers fit a batch. The whole batch goes
// out in one sendmsg, and the kernel queues an acknowledgement per message
// plus an echo per rule before we read any of them.
func (p *Programmer) sizeBuffers(bytes, msgs int) error {
	if p.nl == nil {
		return nil
	}
	snd := bytes + bytes/4 + (1 << 20)
	rcv := msgs*1024 + 2*bytes + (1 << 20)
	if err := setBuffers(p.nl, max(snd, minSocketBuffer), max(rcv, minSocketBuffer)); err != nil {
		p.redial()
		return fmt.Errorf("nft: sizing netlink buffers: %w", err)
	}
	return nil
}

// sameShape reports whether two plans differ at most in the elements of
// their named sets: same chains, same rules (by fingerprint, which covers
// the name of every set a rule looks up), same named sets and key types,
// same anonymous sets.
func sameShape(a, b *plan) bool {
	if len(a.chains) != len(b.chains) || len(a.named) != len(b.named) || a.sets != b.sets {
		return false
	}
	for i := range a.chains {
		x, y := &a.chains[i], &b.chains[i]
		if x.name != y.name || x.hook != y.hook || x.priority != y.priority || x.policy != y.policy || len(x.rules) != len(y.rules) {
			return false
		}
		for j := range x.rules {
			if !bytes.Equal(x.rules[j].udata, y.rules[j].udata) {
				return false
			}
		}
	}
	for i := range a.named {
		x, y := a.named[i].set, b.named[i].set
		if x.Name != y.Name || x.Interval != y.Interval || x.KeyType.Name != y.KeyType.Name || a.named[i].family != b.named[i].family {
			return false
		}
	}
	return true
}

// samePlan reports whether two plans program the same table, set elements
// included.
func samePlan(a, b *plan) bool {
	if !sameShape(a, b) {
		return false
	}
	for i := range a.named {
		x, y := a.named[i].elems, b.named[i].elems
		if len(x) != len(y) {
			return false
		}
		for j := range x {
			if compareElems(x[j], y[j]) != 0 {
				return false
			}
		}
	}
	return true
}

// elemKey identifies an element by its first and last key.
func elemKey(e nftables.SetElement) string { return string(e.Key) + "\x00" + string(e.KeyEnd) }

func compareElems(a, b nftables.SetElement) int {
	if c := bytes.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	return bytes.Compare(a.KeyEnd, b.KeyEnd)
}

func sortedElems(es []nftables.SetElement) bool {
	for i := 1; i < len(es); i++ {
		if compareElems(es[i-1], es[i]) >= 0 {
			return false
		}
	}
	return true
}

// diffElements returns the elements of want that have lacks (add) and
// those of have that want lacks (del). Elements sorted by key, as Compile
// emits them, are merged in one pass; others go through a map.
func diffElements(have, want []nftables.SetElement) (add, del []nftables.SetElement) {
	if sortedElems(have) && sortedElems(want) {
		i, j := 0, 0
		for i < len(have) || j < len(want) {
			switch {
			case j == len(want):
				del = append(del, have[i])
				i++
			case i == len(have):
				add = append(add, want[j])
				j++
			default:
				switch c := compareElems(have[i], want[j]); {
				case c == 0:
					i++
					j++
				case c < 0:
					del = append(del, have[i])
					i++
				default:
					add = append(add, want[j])
					j++
				}
			}
		}
		return add, del
	}
	in := make(map[string]struct{}, len(have))
	for _, e := range have {
		in[elemKey(e)] = struct{}{}
	}
	for _, e := range want {
		k := elemKey(e)
		if _, ok := in[k]; ok {
			delete(in, k)
			continue
		}
		add = append(add, e)
	}
	for _, e := range have {
		if _, ok := in[elemKey(e)]; ok {
			del = append(del, e)
		}
	}
	return add, del
}

// errNoChange reports a ruleset the mirror already holds.
var errNoChange = errors.New("no element changes")

// applyElements sends, in one batch, the element changes that turn the
// mirror's sets into pl's: deletions first, so that an added element may
// take the place of a deleted one it overlaps.
func (p *Programmer) applyElements(c *nftables.Conn, pl *plan) (ApplyStats, error) {
	t := p.tableRef()
	stats := ApplyStats{Incremental: true, Batches: 1, Messages: 2}
	for i := range pl.named {
		add, del := diffElements(p.mirror.named[i].elems, pl.named[i].elems)
		s := *pl.named[i].set
		s.Table = t
		s.ID = 0
		s.Name = kernelName(s.Name, p.slot)
		for _, op := range []struct {
			elems []nftables.SetElement
			send  func(*nftables.Set, []nftables.SetElement) error
			count *int
		}{{del, c.SetDeleteElements, &stats.ElementsDeleted}, {add, c.SetAddElements, &stats.ElementsAdded}} {
			msgs, size, err := sendChunks(&s, op.elems, op.send)
			if err != nil {
				return ApplyStats{}, err
			}
			stats.Messages += msgs
			stats.Bytes += size + 64*msgs
			*op.count += len(op.elems)
		}
	}
	if stats.Messages == 2 {
		return ApplyStats{}, errNoChange
	}
	if err := p.sizeBuffers(stats.Bytes, stats.Messages); err != nil {
		return ApplyStats{}, err
	}
	if err := c.Flush(); err != nil {
		return ApplyStats{}, fmt.Errorf("nft: updating sets of table inet %s: %w", p.table, err)
	}
	return stats, nil
}

// sendChunks queues elements in messages of at most maxElemChunk bytes of
// elements each, and returns the messages and bytes queued.
func sendChunks(s *nftables.Set, elems []nftables.SetElement, send func(*nftables.Set, []nftables.SetElement) error) (msgs, size int, err error) {
	start, chunk := 0, 0
	for i, e := range elems {
		n := elemSize(e)
		if chunk+n > maxElemChunk && i > start {
			if err := send(s, elems[start:i]); err != nil {
				return 0, 0, err
			}
			msgs++
			start, chunk = i, 0
		}
		chunk += n
		size += n
	}
	if start < len(elems) {
		if err := send(s, elems[start:]); err != nil {
			return 0, 0, err
		}
		msgs++
	}
	return msgs, size, nil
}

// addNamedSet adds a named set, under the kernel name name, and its
// elements in chunks, and returns the number of messages queued.
func addNamedSet(c *nftables.Conn, t *nftables.Table, ns namedSet, name string) (int, error) {
	s := *ns.set
	s.Table = t
	s.Name = name
	if err := c.AddSet(&s, nil); err != nil {
		return 0, err
	}
	msgs, _, err := sendChunks(&s, ns.elems, c.SetAddElements)
	return 1 + msgs, err
}

// addSet adds an anonymous set with its elements, and returns the number
// of messages queued. Elements go in chunks that fit a netlink attribute,
// all before the rule that binds the set and all in the same batch.
func addSet(c *nftables.Conn, t *nftables.Table, ks kernelSet) (int, error) {
	s := *ks.set
	s.Table = t
	if ks.size <= maxElemChunk {
		return 2, c.AddSet(&s, ks.elems)
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
	msgs, _, err := sendChunks(&named, ks.elems, c.SetAddElements)
	return 1 + msgs, err
}

// Delete deletes the table; a missing table is not an error. Other tables
// are not touched.
func (p *Programmer) Delete() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.connLocked()
	if err != nil {
		return err
	}
	t := p.tableRef()
	c.AddTable(t)
	c.DelTable(t)
	p.mirror, p.trusted = nil, false
	if err := c.Flush(); err != nil {
		p.redial()
		return fmt.Errorf("nft: deleting table inet %s: %w", p.table, err)
	}
	return nil
}

// Exists reports whether the table is in the kernel.
func (p *Programmer) Exists() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, err := p.findTable()
	return t != nil, err
}

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

// InSync reports whether the kernel's table is exactly rs. When the table
// holds the last ruleset applied through this Programmer, as far as the
// last check saw, and rs differs from it, it answers without reading the
// table: a change of ruleset then costs no read of a large table. Drift
// always reads it.
func (p *Programmer) InSync(rs *compile.Ruleset) (bool, error) {
	if err := p.checkTable(rs); err != nil {
		return false, err
	}
	p.mu.Lock()
	// Should the caller have changed the applied ruleset in place since,
	// the answer may be a needless "no", never a wrong "yes".
	differs := p.trusted && p.mirror != nil && rs != nil && !rs.Equal(p.applied)
	p.mu.Unlock()
	if differs {
		return false, nil
	}
	d, err := p.Drift(rs)
	return d == "" && err == nil, err
}

// Drift compares the kernel's table with rs and describes the first
// difference found, or returns "" when they match. It checks that the table
// exists and is not dormant; that it has exactly the expected base chains
// with their type, hook, priority and policy; that each chain holds the
// expected number of rules, each with the expected number of expressions
// and the expected userdata, which carries the comment and a fingerprint of
// the rule's encoding (expressions and anonymous set elements); that the
// table holds exactly the expected named sets, with their key types and
// elements, and the expected number of anonymous sets. A rule deleted,
// added, moved or replaced (`nft replace rule` cannot reproduce the
// fingerprint) is reported, and so is a set element added or deleted.
// Elements of the anonymous sets are not read back: the kernel refuses
// changes to a constant set bound to a rule.
//
// Drift also checks the table against the last ruleset applied, so that
// the next Apply rewrites the table whole when something outside changed
// it.
func (p *Programmer) Drift(rs *compile.Ruleset) (string, error) {
	if err := p.checkTable(rs); err != nil {
		return "", err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pl, err := buildPlan(rs, p.table)
	if err != nil {
		return "", fmt.Errorf("nft: %w", err)
	}
	kt, err := p.findTable()
	if err != nil {
		p.trusted = false
		return "", err
	}
	if kt == nil {
		p.trusted = false
		return fmt.Sprintf("table inet %s is missing", p.table), nil
	}
	if kt.Flags != 0 {
		p.trusted = false
		return fmt.Sprintf("table inet %s has flags %#x", p.table, kt.Flags), nil
	}
	st, err := p.readTable(p.conn, kt)
	if err != nil {
		p.trusted = false
		p.redial()
		return "", err
	}
	slot := slotOf(pl, st.rules)
	d := st.diff(pl, slot)
	switch {
	case p.mirror == nil:
	case samePlan(p.mirror, pl):
		p.trusted = d == "" && slot == p.slot
	default:
		p.trusted = st.diff(p.mirror, p.slot) == ""
	}
	return d, nil
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
		rules:  map[string][]*nftables.Rule{},
		named:  map[string]*nftables.Set{},
		elems:  map[string][]nftables.SetElement{},
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nft: listing chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != p.table {
			continue
		}
		st.chains[ch.Name] = ch
		rules, err := c.GetRules(kt, &nftables.Chain{Name: ch.Name, Table: kt})
		if err != nil {
			return nil, fmt.Errorf("nft: listing rules of chain %s: %w", ch.Name, err)
		}
		st.rules[ch.Name] = rules
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
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("nft: listing elements of set %s: %w", s.Name, err)
		}
		st.elems[s.Name] = elems
	}
	return st, nil
}

// diff describes the first difference between the table and a plan whose
// named sets are in slot.
func (st *tableState) diff(pl *plan, slot int) string {
	seen := map[string]bool{}
	for _, want := range pl.chains {
		ch := st.chains[want.name]
		switch {
		case ch == nil:
			return fmt.Sprintf("chain %s is missing", want.name)
		case ch.Type != nftables.ChainTypeFilter || ch.Hooknum == nil || *ch.Hooknum != want.hook ||
			ch.Priority == nil || *ch.Priority != want.priority:
			return fmt.Sprintf("chain %s has the wrong type, hook or priority", want.name)
		case ch.Policy == nil || *ch.Policy != want.policy:
			return fmt.Sprintf("chain %s has the wrong policy", want.name)
		}
		seen[want.name] = true
	}
	for name := range st.chains {
		if !seen[name] {
			return fmt.Sprintf("unexpected chain %s", name)
		}
	}
	for _, want := range pl.chains {
		rules := st.rules[want.name]
		if len(rules) != len(want.rules) {
			return fmt.Sprintf("chain %s has %d rules, want %d", want.name, len(rules), len(want.rules))
		}
		for i, r := range rules {
			w := want.rules[i]
			if len(r.Exprs) != len(w.exprs) || !bytes.Equal(r.UserData, w.udata) {
				return fmt.Sprintf("chain %s rule %d (handle %d) differs", want.name, i, r.Handle)
			}
		}
	}
	if len(st.anon) != pl.sets {
		return fmt.Sprintf("table has %d anonymous sets, want %d", len(st.anon), pl.sets)
	}
	for _, s := range st.anon {
		if !s.Constant {
			return fmt.Sprintf("unexpected set %s", s.Name)
		}
	}
	for name := range st.named {
		if !pl.hasKernel(name, slot) {
			return fmt.Sprintf("unexpected set %s", name)
		}
	}
	for _, want := range pl.named {
		name := kernelName(want.set.Name, slot)
		s := st.named[name]
		switch {
		case s == nil:
			return fmt.Sprintf("set %s is missing", name)
		case s.Interval != want.set.Interval || !s.Concatenation || s.Constant || s.IsMap || s.HasTimeout || s.KeyType.Name != want.set.KeyType.Name:
			return fmt.Sprintf("set %s has the wrong type or flags", name)
		}
		add, del := diffElements(st.elems[name], want.elems)
		switch {
		case len(add) > 0:
			return fmt.Sprintf("set %s lacks %d elements", name, len(add))
		case len(del) > 0:
			return fmt.Sprintf("set %s has %d unexpected elements", name, len(del))
		}
	}
	return ""
}
