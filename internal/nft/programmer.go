// Package nft programs a compile.Ruleset into the kernel as one nftables
// table of family inet, over netlink. What packets meet changes in a single
// transaction, so the kernel never holds an empty or partial ruleset: one
// that replaces every rule (after a transaction that only adds the new
// named sets, which no rule uses yet), or, when only the elements of the
// ruleset's named sets change, one that deletes and adds just those
// elements. No other table is ever modified.
//
// The files read top to bottom, each calling only into those after it:
//
//   - programmer.go: the Programmer, its entry points, and the choice of a
//     write strategy;
//   - the write strategies: write_update.go (set elements only),
//     write_staged.go (a rewrite in two transactions), write_replace.go
//     (the table replaced in one), and write_batch.go, which queues their
//     messages;
//   - the kernel side of reading: read.go (what the table holds, counters)
//     and read_drift.go (how it differs from a plan);
//   - the plan, pure: plan.go (a ruleset encoded for the kernel),
//     plan_changes.go (what a transaction adds, flushes and deletes),
//     plan_peer_updates.go (a change of peer sets' prefixes alone, planned
//     from the prefixes that changed),
//     plan_slots.go (the two names of each named set), plan_rules.go and
//     plan_sets.go (the encoding of rules and named sets);
//   - conn.go: the netlink socket.
package nft

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nodefw/nodefw/internal/compile"
)

// Programmer owns one nftables table in one network namespace.
type Programmer struct {
	table  string
	nsFile *os.File // nil for the current namespace

	mu     sync.Mutex
	closed bool
	conn   *nftables.Conn
	nl     *netlink.Conn // the socket under conn, for buffer sizing

	last lastCommit
}

// lastCommit is what the table was last made or found to hold. The
// Programmer is its one owner: its caller (the agent) asks Committed for
// the ruleset to restore rather than keeping a copy of its own.
type lastCommit struct {
	// ruleset is the last ruleset Apply committed whole, or that Drift
	// found the table to hold exactly, as the caller passed it; nil until
	// then and after Delete. A failed Apply leaves it as it was.
	ruleset *compile.Ruleset
	// plan is ruleset encoded, and slot the slot of its named sets (see
	// slotSuffix); plan is nil when a failure left the table unknown.
	plan *plan
	slot int
	// trusted says the table still holds plan: cleared by any failure and
	// by a Drift that finds the table changed from outside. Only a trusted
	// plan lets Apply send set elements alone, and lets Drift answer
	// without reading the table.
	trusted bool
}

// ApplyStats describes the batches of one successful Apply.
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
	// Flush is how long the kernel took to take an incremental update's
	// batch, from sending it to its acknowledgement; zero for rewrites.
	Flush time.Duration
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

// Close releases the netlink socket and the namespace handle.
func (p *Programmer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.last = lastCommit{}
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

// Committed returns the ruleset the table was last made or found to hold:
// the last one Apply committed, or one Drift found the table to hold
// exactly, whichever came last; nil before either and after Delete. A
// failed Apply leaves it as it was, so it is the ruleset to restore.
func (p *Programmer) Committed() *compile.Ruleset {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last.ruleset
}

// Apply makes the table rs. What packets meet changes in one netlink
// batch, which the kernel commits atomically. Other tables are not touched.
//
// When the table already holds the ruleset last committed (nothing has
// failed since, and no Drift has seen it changed from outside) and rs
// differs from it only in the elements of its named sets, the batch
// carries just the elements to delete and to add: the rules, their
// counters and the other elements stay. Otherwise, and if that batch
// fails, the table is rewritten: a first batch adds rs's named sets,
// filled, under names the live rules do not use (see slotSuffix), and a
// second replaces every rule and deletes the sets no rule uses any more.
// If that fails too, one batch replaces the table whole.
//
// A model rule that both logs and has a verdict becomes two kernel rules,
// since an exceeded log limit would otherwise skip the verdict. When the
// kernel refuses the batch it keeps the previous table whole; when reading
// its answer fails (say, ENOBUFS) the batch may have been committed, and
// Drift tells.
func (p *Programmer) Apply(rs *compile.Ruleset) (ApplyStats, error) {
	if err := p.checkTable(rs); err != nil {
		return ApplyStats{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.connLocked()
	if err != nil {
		return ApplyStats{}, err
	}
	// A change of peer sets' prefixes alone is planned from the prefixes
	// that changed, without encoding the rest (plan_peer_updates.go).
	if p.last.trusted {
		if next, updates, ok := planPeerUpdates(p.last.ruleset, p.last.plan, rs, p.last.slot); ok && len(updates) > 0 {
			stats, err := p.updateElements(c, updates)
			if err == nil {
				p.last.ruleset, p.last.plan = rs, next
				return stats, nil
			}
			p.last.trusted = false
			p.redial()
			if c, err = p.connLocked(); err != nil {
				return ApplyStats{}, err
			}
		}
	}
	pl, err := buildPlan(rs, p.table)
	if err != nil {
		return ApplyStats{}, fmt.Errorf("nft: %w", err)
	}
	// An unchanged ruleset has no element updates and is rewritten too,
	// which repairs what a change from outside may have done since the
	// last Drift.
	if p.last.trusted && p.last.plan != nil && sameShape(p.last.plan, pl) {
		if updates := planSetUpdates(p.last.plan, pl, p.last.slot); len(updates) > 0 {
			stats, err := p.updateElements(c, updates)
			if err == nil {
				p.last.ruleset, p.last.plan = rs, pl
				return stats, nil
			}
			// Whatever went wrong, the rewrite below repairs it.
			p.last.trusted = false
			p.redial()
			if c, err = p.connLocked(); err != nil {
				return ApplyStats{}, err
			}
		}
	}
	slot, stats, err := p.rewrite(c, pl)
	if err != nil {
		p.last.plan, p.last.trusted = nil, false
		return ApplyStats{}, err
	}
	p.last = lastCommit{ruleset: rs, plan: pl, slot: slot, trusted: true}
	return stats, nil
}

// rewrite rewrites the table whole: staged (see rewriteStaged), or, when
// that fails, in the one batch of replaceTable. It returns the slot of the
// named sets it wrote.
func (p *Programmer) rewrite(c *nftables.Conn, pl *plan) (int, ApplyStats, error) {
	slot, stats, err := p.rewriteStaged(c, pl)
	if err == nil {
		return slot, stats, nil
	}
	// Whatever the staged rewrite ran into (a table flag it cannot
	// change, objects it does not know), replacing the whole table does
	// not depend on what the table holds.
	p.redial()
	if c, err = p.connLocked(); err != nil {
		return 0, ApplyStats{}, err
	}
	stats, err = p.replaceTable(c, pl)
	return 0, stats, err
}

// Drift compares the kernel's table with rs and describes the first
// difference found, or returns "" when the table is exactly rs. It checks
// that the table exists and is not dormant; that it has exactly the
// expected base chains with their type, hook, priority and policy; that
// each chain holds the expected number of rules, each with the expected
// number of expressions and the expected userdata, which carries the
// comment and a fingerprint of the rule's encoding (expressions and
// anonymous set elements); that the table holds exactly the expected named
// sets, with their key types and elements, and the expected number of
// anonymous sets. A rule deleted, added, moved or replaced (`nft replace
// rule` cannot reproduce the fingerprint) is reported, and so is a set
// element added or deleted. Elements of the anonymous sets are not read
// back: the kernel refuses changes to a constant set bound to a rule.
//
// When the table holds the ruleset last committed, as far as the last
// check saw, and rs is another one, Drift answers without reading the
// table: a change of ruleset then costs no read of a large table. Should
// the caller have changed the committed ruleset in place since, the answer
// may be a needless difference, never a wrong "".
//
// A table found to be exactly rs makes rs the committed ruleset (a
// restarted agent adopts its table this way); one found changed from
// outside is no longer trusted, so that the next Apply rewrites it whole.
func (p *Programmer) Drift(rs *compile.Ruleset) (string, error) {
	if err := p.checkTable(rs); err != nil {
		return "", err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last.trusted && p.last.plan != nil && rs != nil && !rs.Equal(p.last.ruleset) {
		return fmt.Sprintf("table inet %s holds the ruleset committed last, not this one", p.table), nil
	}
	pl, err := buildPlan(rs, p.table)
	if err != nil {
		return "", fmt.Errorf("nft: %w", err)
	}
	st, d, err := p.readForDrift()
	if err != nil || d != "" {
		p.last.trusted = false
		return d, err
	}
	slot := slotOf(pl, st.rules)
	d = st.diff(pl, slot)
	switch {
	case d == "":
		p.last = lastCommit{ruleset: rs, plan: pl, slot: slot, trusted: true}
	case p.last.plan == nil:
	case samePlan(p.last.plan, pl):
		p.last.trusted = false
	default:
		p.last.trusted = st.diff(p.last.plan, p.last.slot) == ""
	}
	return d, nil
}

// readForDrift reads the table, or describes why there is none to
// compare: missing, or with flags (dormant) that no plan has.
func (p *Programmer) readForDrift() (*tableState, string, error) {
	kt, err := p.findTable()
	switch {
	case err != nil:
		return nil, "", err
	case kt == nil:
		return nil, fmt.Sprintf("table inet %s is missing", p.table), nil
	case kt.Flags != 0:
		return nil, fmt.Sprintf("table inet %s has flags %#x", p.table, kt.Flags), nil
	}
	st, err := p.readTable(p.conn, kt)
	if err != nil {
		p.redial()
		return nil, "", err
	}
	return st, "", nil
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
	p.last.plan, p.last.trusted = nil, false
	if err := p.deleteTable(c); err != nil {
		return err
	}
	p.last = lastCommit{}
	return nil
}

// RuleCounter is the packet and byte count of one rule, read from the kernel.
type RuleCounter struct {
	Chain   string
	Comment string
	Packets uint64
	Bytes   uint64
}

// Counters reads the counter of every rule in the table that has one, in
// chain and rule order, and in place of a lookup in a run's counting set
// the counters of the set's elements, each named by the rule it counts
// for. Rules and elements that share a comment (a log rule and its
// verdict rule, a rule's elements) are reported separately.
func (p *Programmer) Counters() ([]RuleCounter, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.connLocked()
	if err != nil {
		return nil, err
	}
	return p.readCounters(c)
}

func (p *Programmer) checkTable(rs *compile.Ruleset) error {
	if rs != nil && rs.Table != "" && rs.Table != p.table {
		return fmt.Errorf("nft: ruleset is for table %q, programmer owns %q", rs.Table, p.table)
	}
	return nil
}
