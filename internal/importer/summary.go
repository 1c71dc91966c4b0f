package importer

import (
	"fmt"
	"slices"
	"strings"
)

// lineStatus is what became of a rule line of a chain imported: of the
// filter table, or PREROUTING of raw or mangle.
type lineStatus uint8

// Statuses, from the least to the most telling: a line taken in at several
// jumps keeps the most telling of its outcomes.
const (
	// statusUnused: no packet reaches the line (its chain is never jumped
	// to, or an unconditional RETURN ends the chain before it).
	statusUnused lineStatus = iota
	// statusImported: translated exactly (its rules, a jump taken in, a
	// RETURN handled).
	statusImported
	// statusChanged: translated with a caveat, which a warning states.
	statusChanged
	// statusOwned: in a chain that belongs to another component, skipped.
	statusOwned
	// statusSkipped: not translated, which a warning states.
	statusSkipped
)

// mark records an outcome of a line.
func (im *importer) mark(line int, s lineStatus) {
	if cur, ok := im.status[line]; !ok || s > cur {
		im.status[line] = s
	}
}

// Summary counts the rule lines (-A, -I) of the chains imported by what
// became of them: the lines of the filter table and of the PREROUTING
// chains of raw and mangle. The rules of raw's and mangle's other chains
// are reported each, and the nat table as a whole, but not counted, as
// nothing of them is imported.
type Summary struct {
	// Rules counts the rule lines.
	Rules int
	// PreRouting counts, of Rules, those of the PREROUTING chains of raw
	// and mangle.
	PreRouting int
	// Imported counts the lines translated into the policy; Changed those
	// of them translated with a caveat.
	Imported, Changed int
	// Skipped counts the lines not translated; Owned those of them in
	// chains left to other components (Kubernetes, flannel, Calico,
	// Docker).
	Skipped, Owned int
	// Unused counts the lines no packet reaches: in chains nothing jumps
	// to, or after a RETURN that ends their chain.
	Unused int
	// Differences counts warnings about behaviour the policy changes
	// beyond one line's rule: drops that nodefw's implicit accepts shadow,
	// traffic that chains left to other components accepted.
	Differences int
}

// skippedLines are the rule lines not translated, in order.
func (im *importer) skippedLines() []int {
	var out []int
	for line, st := range im.status {
		if st == statusSkipped || st == statusOwned {
			out = append(out, line)
		}
	}
	slices.Sort(out)
	return out
}

func (im *importer) summary() Summary {
	s := Summary{
		Rules:       len(im.status),
		PreRouting:  len(im.chains[rawPreRouting]) + len(im.chains[manglePreRouting]),
		Differences: im.differences,
	}
	for _, st := range im.status {
		switch st {
		case statusUnused:
			s.Unused++
		case statusImported:
			s.Imported++
		case statusChanged:
			s.Imported++
			s.Changed++
		case statusOwned:
			s.Skipped++
			s.Owned++
		case statusSkipped:
			s.Skipped++
		}
	}
	return s
}

// Exact reports whether the policy does all the filter table did: no
// line skipped, none translated with a caveat, no other difference.
func (s Summary) Exact() bool {
	return s.Skipped == 0 && s.Changed == 0 && s.Differences == 0
}

// String says it in a line: "12 of 40 filter rules imported, 28 skipped
// (25 in chains left to other components); 1 imported with a change", or
// "filter and PREROUTING rules" when raw or mangle had PREROUTING rules.
func (s Summary) String() string {
	var b strings.Builder
	what := "filter"
	if s.PreRouting > 0 {
		what = "filter and PREROUTING"
	}
	fmt.Fprintf(&b, "%d of %d %s rules imported, %d skipped", s.Imported, s.Rules, what, s.Skipped)
	if s.Owned > 0 {
		fmt.Fprintf(&b, " (%d in chains left to other components)", s.Owned)
	}
	var more []string
	if s.Changed > 0 {
		more = append(more, plural(s.Changed, "imported with a change", "imported with changes"))
	}
	if s.Unused > 0 {
		more = append(more, plural(s.Unused, "never reached", "never reached"))
	}
	if s.Differences > 0 {
		more = append(more, plural(s.Differences, "other difference", "other differences"))
	}
	if len(more) > 0 {
		b.WriteString("; " + strings.Join(more, ", "))
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
