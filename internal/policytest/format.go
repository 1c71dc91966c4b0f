package policytest

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/reference"
)

// Style says how text for people is printed: Color paints it with ANSI
// escapes (callers turn it on only for a terminal, and not under
// NO_COLOR).
type Style struct {
	Color bool
}

// Select Graphic Rendition codes.
const (
	sgrBold  = "1"
	sgrDim   = "2"
	sgrRed   = "31"
	sgrGreen = "32"
)

func (s Style) paint(sgr, text string) string {
	if !s.Color || sgr == "" || text == "" {
		return text
	}
	return "\x1b[" + sgr + "m" + text + "\x1b[0m"
}

// verdictSGR colours a verdict: green lets the packet through, red does
// not.
func verdictSGR(v compile.Verdict) string {
	if v == compile.VerdictAccept {
		return sgrGreen
	}
	return sgrRed
}

// WriteTrace prints a trace: the node and packet, then one row per step
// with what it did to the packet, then the verdict and what decided it.
func WriteTrace(w io.Writer, t Trace, st Style) error {
	var head table
	node := t.Node
	if len(t.Labels) > 0 {
		node += " (" + labelList(t.Labels) + ")"
	}
	policies := strings.Join(t.Policies, ", ")
	if policies == "" {
		policies = "none select the node"
	}
	head.add(cell{text: "node"}, cell{text: node})
	head.add(cell{text: "policies"}, cell{text: policies})
	head.add(cell{text: "packet"}, cell{text: t.parsed.String()})
	head.write(w, st)
	fmt.Fprintln(w)

	var steps table
	steps.add(cell{text: "#"}, cell{text: "STEP"}, cell{text: "ACTION"}, cell{text: "RESULT"})
	last := len(t.Steps) - 1
	for i, s := range t.Steps {
		pos := ""
		if s.Kind == reference.StepRule {
			pos = strconv.Itoa(s.Position)
		}
		row := []cell{{text: pos}, {text: s.Name()}, {text: string(s.Action)}, {text: stepResult(s, i == last)}}
		switch {
		case i == last:
			for j := range row {
				row[j].sgr = sgrBold
			}
		case !s.Matched:
			row[3].sgr = sgrDim
		}
		steps.add(row...)
	}
	steps.write(w, st)
	fmt.Fprintln(w)
	_, err := fmt.Fprintf(w, "verdict: %s, decided by %s\n", st.paint(sgrBold+";"+verdictSGR(t.Verdict), string(t.Verdict)), decider(t))
	return err
}

// stepResult says what a step did: why it did not match, or that it
// matched and what followed, with its notes.
func stepResult(s reference.Step, decided bool) string {
	var out string
	switch {
	case !s.Matched:
		m := s.Mismatch
		out = fmt.Sprintf("no match on %s: %s, wants %s", m.Field, m.Got, m.Want)
	case decided:
		out = "decides: " + string(s.Verdict)
	default:
		out = "matches, goes on"
	}
	for _, n := range s.Notes {
		out += "; " + n
	}
	return out
}

// decider names what decided a trace, in words.
func decider(t Trace) string {
	d := t.Decider()
	switch d.Kind {
	case reference.StepRule:
		return "rule " + d.Name()
	case reference.StepImplicit:
		return "the implicit accept " + d.Name()
	}
	if d.Action == v1alpha1.ActionDrop && t.Verdict == compile.VerdictAccept {
		return fmt.Sprintf("the %s chain's default action (Drop, in Audit mode: only counted and logged)", t.Chain)
	}
	return fmt.Sprintf("the %s chain's default action (%s)", t.Chain, d.Action)
}

// WriteResults prints the results of a test file as a table, then a
// summary line. Traces are printed for the failed cases, and with
// verbose for every case.
func WriteResults(w io.Writer, results []Result, verbose bool, st Style) error {
	var tb table
	tb.add(cell{text: "RESULT"}, cell{text: "CASE"}, cell{text: "NODE"}, cell{text: "PACKET"},
		cell{text: "WANT"}, cell{text: "GOT"}, cell{text: "DECIDED BY"})
	failed := 0
	for _, r := range results {
		result, sgr := "PASS", sgrGreen
		if !r.Pass {
			result, sgr = "FAIL", sgrRed
			failed++
		}
		node := r.Case.Node
		if node == "" {
			node = "{" + labelList(r.Case.NodeLabels) + "}"
		}
		by := r.Trace.DecidedBy
		if r.Case.DecidedBy != "" && r.Case.DecidedBy != by {
			by += " (want " + r.Case.DecidedBy + ")"
		}
		want := strings.ToLower(r.Case.Verdict)
		tb.add(cell{text: result, sgr: sgrBold + ";" + sgr}, cell{text: r.Case.Name}, cell{text: node},
			cell{text: r.Trace.parsed.String()}, cell{text: want}, cell{text: string(r.Trace.Verdict), sgr: verdictSGR(r.Trace.Verdict)}, cell{text: by})
	}
	tb.write(w, st)
	for _, r := range results {
		if r.Pass && !verbose {
			continue
		}
		fmt.Fprintf(w, "\n--- %s: %s\n", map[bool]string{true: "PASS", false: "FAIL"}[r.Pass], r.Case.Name)
		for _, f := range r.Failures {
			fmt.Fprintf(w, "%s\n", st.paint(sgrRed, f))
		}
		if err := WriteTrace(w, r.Trace, st); err != nil {
			return err
		}
	}
	summary := fmt.Sprintf("%d cases: %d passed, %d failed", len(results), len(results)-failed, failed)
	sgr := sgrGreen
	if failed > 0 {
		sgr = sgrRed
	}
	_, err := fmt.Fprintf(w, "\n%s\n", st.paint(sgrBold+";"+sgr, summary))
	return err
}

// labelList is labels as k=v pairs, sorted; a label without a value is
// its key and "=".
func labelList(labels map[string]string) string {
	pairs := make([]string, 0, len(labels))
	for k, v := range labels {
		pairs = append(pairs, k+"="+v)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

// cell is one cell of a table, with its SGR code.
type cell struct {
	text, sgr string
}

// table aligns columns on the cells' text alone, so that colour escapes
// do not shift them (text/tabwriter would count them).
type table struct {
	rows [][]cell
}

func (t *table) add(cells ...cell) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer, st Style) {
	var widths []int
	for _, row := range t.rows {
		for i, c := range row {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c.text))
		}
	}
	for _, row := range t.rows {
		var b strings.Builder
		for i, c := range row {
			b.WriteString(st.paint(c.sgr, c.text))
			if i < len(row)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c.text)+2))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}
