package compile

import (
	"errors"
	"fmt"
	"math"
	"regexp"
)

// Options are an agent's settings that shape every ruleset it compiles.
type Options struct {
	// Table is the nftables table; "" means DefaultTable.
	Table string
	// FailsafeInbound are accepted on the input chain and FailsafeOutbound
	// on the output chain, before any policy rule. nil means none: agents
	// pass DefaultFailsafeInbound and DefaultFailsafeOutbound unless told
	// otherwise.
	FailsafeInbound, FailsafeOutbound []Failsafe

	// SetLookups compiles runs of simple rules into lookups in concatenated
	// sets, so that a packet's cost depends on how often the verdict
	// changes along the rules rather than on their number. Agents turn it
	// on unless told otherwise; without it every rule is one nftables
	// rule, as in iptables.
	SetLookups bool

	// ExactSetMin is the least number of elements of a run's set for
	// which its single-key elements (one protocol, one port, one address)
	// go to a hash set of their own, next to the interval set of the
	// others: the kernel fills a hash set several times faster. 0 means
	// the default, 256 (defaultExactSetMin); a negative value never
	// splits.
	ExactSetMin int

	// MergedRunCounters counts each run of rules in sets as a whole, with
	// one counter on each lookup, instead of every rule on its own with a
	// counter per set element. It exists to measure what per-rule
	// counters cost (make bench); agents leave it off.
	MergedRunCounters bool

	// LogGroup is the NFLOG group that logged and audited rules send
	// packets to, for the agent to read; 0 means DefaultLogGroup.
	LogGroup uint16

	// minRunLen is the least length of a run of simple rules that becomes
	// set lookups; 0 means minRunRules. Tests lower it to exercise sets
	// with few rules.
	minRunLen int
}

func (o Options) minRun() int {
	if !o.SetLookups && o.minRunLen == 0 {
		return math.MaxInt
	}
	if o.minRunLen > 0 {
		return o.minRunLen
	}
	return minRunRules
}

// defaultExactSetMin is the default of Options.ExactSetMin: smaller sets
// stay one interval set, where a second lookup would cost more than the
// faster filling saves.
const defaultExactSetMin = 256

func (o Options) exactSetMin() int {
	switch {
	case o.ExactSetMin < 0:
		return math.MaxInt
	case o.ExactSetMin == 0:
		return defaultExactSetMin
	}
	return o.ExactSetMin
}

func (o Options) logGroup() uint16 {
	if o.LogGroup == 0 {
		return DefaultLogGroup
	}
	return o.LogGroup
}

func (o Options) table() string {
	if o.Table == "" {
		return DefaultTable
	}
	return o.Table
}

// tableName is what nft accepts unquoted as a table name.
var tableName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,254}$`)

func validateOptions(opts Options) error {
	var errs []error
	if !tableName.MatchString(opts.table()) {
		errs = append(errs, fmt.Errorf("table: %q is not a table name", opts.Table))
	}
	for i, f := range opts.FailsafeInbound {
		if err := ValidateFailsafe(f); err != nil {
			errs = append(errs, fmt.Errorf("failsafeInbound[%d]: %w", i, err))
		}
	}
	for i, f := range opts.FailsafeOutbound {
		if err := ValidateFailsafe(f); err != nil {
			errs = append(errs, fmt.Errorf("failsafeOutbound[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}
