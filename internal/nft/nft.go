// Package nft programs a compile.Ruleset into the kernel as one nftables
// table of family inet, over netlink. Every change replaces the whole table
// in a single transaction, so the kernel never holds an empty or partial
// table. No other table is ever modified.
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

// Apply replaces the table with rs in one netlink batch, which the kernel
// commits atomically: add the table (so that deleting it cannot fail),
// delete it, then add it again with its chains, sets and rules. Other
// tables are not touched. A model rule that both logs and has a verdict
// becomes two kernel rules, since an exceeded log limit would otherwise skip
// the verdict. When the kernel refuses the batch it keeps the previous table
// whole; when reading its answer fails (say, ENOBUFS) the batch may have
// been committed, and InSync tells.
func (p *Programmer) Apply(rs *compile.Ruleset) error {
	if err := p.checkTable(rs); err != nil {
		return err
	}
	pl, err := buildPlan(rs, p.table)
	if err != nil {
		return fmt.Errorf("nft: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.connLocked()
	if err != nil {
		return err
	}
	t := p.tableRef()
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
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
		for j := range kc.rules {
			kr := &kc.rules[j]
			for _, ks := range kr.sets {
				if err := addSet(c, t, ks); err != nil {
					// Drop the half-built batch with the connection.
					p.redial()
					return fmt.Errorf("nft: chain %s: %w", kc.name, err)
				}
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: kr.exprs, UserData: kr.udata})
		}
	}
	if p.nl != nil {
		// The whole batch goes out in one sendmsg, and the kernel queues an
		// acknowledgement per message plus an echo per rule before we read
		// any of them: size both buffers for that.
		snd := pl.bytes + pl.bytes/4 + (1 << 20)
		rcv := pl.msgs*1024 + 2*pl.bytes + (1 << 20)
		if err := setBuffers(p.nl, max(snd, minSocketBuffer), max(rcv, minSocketBuffer)); err != nil {
			p.redial()
			return fmt.Errorf("nft: sizing netlink buffers: %w", err)
		}
	}
	if err := c.Flush(); err != nil {
		p.redial()
		return fmt.Errorf("nft: programming table inet %s: %w", p.table, err)
	}
	return nil
}

// addSet adds an anonymous set with its elements. Elements go in chunks
// that fit a netlink attribute, all before the rule that binds the set and
// all in the same batch.
func addSet(c *nftables.Conn, t *nftables.Table, ks kernelSet) error {
	s := *ks.set
	s.Table = t
	if ks.size <= maxElemChunk {
		return c.AddSet(&s, ks.elems)
	}
	// No elements with the set itself: its size hint stays 0 (no limit),
	// since the hint would otherwise cap the set at the first chunk.
	if err := c.AddSet(&s, nil); err != nil {
		return err
	}
	// The library refuses to add elements to an anonymous set after its
	// creation; the kernel allows it until a rule binds the set. The named
	// view refers to the same set by name and batch ID.
	named := s
	named.Anonymous = false
	var chunk []nftables.SetElement
	size := 0
	for _, e := range ks.elems {
		n := elemSize(e)
		if size+n > maxElemChunk && len(chunk) > 0 {
			if err := c.SetAddElements(&named, chunk); err != nil {
				return err
			}
			chunk, size = nil, 0
		}
		chunk = append(chunk, e)
		size += n
	}
	if len(chunk) > 0 {
		return c.SetAddElements(&named, chunk)
	}
	return nil
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

// InSync reports whether the kernel's table is exactly rs.
func (p *Programmer) InSync(rs *compile.Ruleset) (bool, error) {
	d, err := p.Drift(rs)
	return d == "" && err == nil, err
}

// Drift compares the kernel's table with rs and describes the first
// difference found, or returns "" when they match. It checks that the table
// exists and is not dormant; that it has exactly the expected base chains
// with their type, hook, priority and policy; that each chain holds the
// expected number of rules, each with the expected number of expressions
// and the expected userdata, which carries the comment and a fingerprint of
// the rule's encoding (expressions and set elements); and that the table
// holds only the expected number of anonymous sets. A rule deleted, added,
// moved or replaced (`nft replace rule` cannot reproduce the fingerprint)
// is reported. Elements of the anonymous sets are not read back: the kernel
// refuses changes to a constant set bound to a rule.
func (p *Programmer) Drift(rs *compile.Ruleset) (string, error) {
	if err := p.checkTable(rs); err != nil {
		return "", err
	}
	pl, err := buildPlan(rs, p.table)
	if err != nil {
		return "", fmt.Errorf("nft: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	kt, err := p.findTable()
	if err != nil {
		return "", err
	}
	if kt == nil {
		return fmt.Sprintf("table inet %s is missing", p.table), nil
	}
	if kt.Flags != 0 {
		return fmt.Sprintf("table inet %s has flags %#x", p.table, kt.Flags), nil
	}
	c := p.conn
	d, err := p.drift(c, kt, pl)
	if err != nil {
		p.redial()
	}
	return d, err
}

func (p *Programmer) drift(c *nftables.Conn, kt *nftables.Table, pl *plan) (string, error) {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return "", fmt.Errorf("nft: listing chains: %w", err)
	}
	have := map[string]*nftables.Chain{}
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == p.table {
			have[ch.Name] = ch
		}
	}
	for _, want := range pl.chains {
		ch := have[want.name]
		switch {
		case ch == nil:
			return fmt.Sprintf("chain %s is missing", want.name), nil
		case ch.Type != nftables.ChainTypeFilter || ch.Hooknum == nil || *ch.Hooknum != want.hook ||
			ch.Priority == nil || *ch.Priority != want.priority:
			return fmt.Sprintf("chain %s has the wrong type, hook or priority", want.name), nil
		case ch.Policy == nil || *ch.Policy != want.policy:
			return fmt.Sprintf("chain %s has the wrong policy", want.name), nil
		}
		delete(have, want.name)
	}
	for name := range have {
		return fmt.Sprintf("unexpected chain %s", name), nil
	}
	for _, want := range pl.chains {
		rules, err := c.GetRules(kt, &nftables.Chain{Name: want.name, Table: kt})
		if err != nil {
			return "", fmt.Errorf("nft: listing rules of chain %s: %w", want.name, err)
		}
		if len(rules) != len(want.rules) {
			return fmt.Sprintf("chain %s has %d rules, want %d", want.name, len(rules), len(want.rules)), nil
		}
		for i, r := range rules {
			w := want.rules[i]
			if len(r.Exprs) != len(w.exprs) || !bytes.Equal(r.UserData, w.udata) {
				return fmt.Sprintf("chain %s rule %d (handle %d) differs", want.name, i, r.Handle), nil
			}
		}
	}
	sets, err := c.GetSets(kt)
	if err != nil {
		return "", fmt.Errorf("nft: listing sets: %w", err)
	}
	if len(sets) != pl.sets {
		return fmt.Sprintf("table has %d sets, want %d", len(sets), pl.sets), nil
	}
	for _, s := range sets {
		if !s.Anonymous || !s.Constant {
			return fmt.Sprintf("unexpected set %s", s.Name), nil
		}
	}
	return "", nil
}
