package policytest

import (
	"fmt"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/resolve"
)

// Result is a case run: the trace of its packet on its node, and whether
// the verdict, and the decider when the case names one, are as expected.
type Result struct {
	Case  Case  `json:"case"`
	Trace Trace `json:"trace"`
	Pass  bool  `json:"pass"`
	// Failures say what differs from the case.
	Failures []string `json:"failures,omitempty"`
}

// Run runs every case of the file against the policies, offline, and
// returns the results in the file's order with the problems that
// resolving the policies raised (what policy status would report), each
// once.
func Run(f *File, policies []v1alpha1.NodeFirewallPolicy, o Overrides) ([]Result, []resolve.Problem, error) {
	failsafes, err := f.failsafes(o)
	if err != nil {
		return nil, nil, err
	}
	opts := FailsafeOptions(failsafes)
	var results []Result
	var problems []resolve.Problem
	seen := map[resolve.Problem]bool{}
	for i, c := range f.Cases {
		nodes, name := f.caseNode(c)
		node, ps, err := ResolveNode(policies, nodes, name, failsafes)
		if err != nil {
			return nil, nil, fmt.Errorf("cases[%d] (%s): %w", i, c.Name, err)
		}
		for _, p := range ps {
			if !seen[p] {
				seen[p] = true
				problems = append(problems, p)
			}
		}
		p, err := c.Packet.Parse()
		if err != nil {
			return nil, nil, fmt.Errorf("cases[%d] (%s): packet: %w", i, c.Name, err)
		}
		results = append(results, check(c, TraceNode(node, opts, p)))
	}
	return results, problems, nil
}

// check compares a case's trace with what the case expects.
func check(c Case, t Trace) Result {
	r := Result{Case: c, Trace: t}
	if want := verdicts[strings.ToLower(c.Verdict)]; t.Verdict != want {
		r.Failures = append(r.Failures, fmt.Sprintf("verdict %s, want %s", t.Verdict, want))
	}
	if c.DecidedBy != "" && t.DecidedBy != c.DecidedBy {
		r.Failures = append(r.Failures, fmt.Sprintf("decided by %s, want %s", t.DecidedBy, c.DecidedBy))
	}
	r.Pass = len(r.Failures) == 0
	return r
}
