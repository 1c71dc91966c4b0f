package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"

	"github.com/nodefw/nodefw/internal/policytest"
)

// Exit codes of test.
const (
	exitPassed = 0
	// exitFailed: a case got another verdict or decider than it expects.
	exitFailed = 1
	// exitInvalid: the cases could not run: wrong flags, or a policy or
	// test file that cannot be read or is invalid.
	exitInvalid = 2
)

// testReport is what `nodefw test -o json` prints.
type testReport struct {
	Results []policytest.Result `json:"results"`
	Passed  int                 `json:"passed"`
	Failed  int                 `json:"failed"`
}

// runTest runs the cases of test files against policy files, offline,
// prints a table of the results, and fails when a case does.
func runTest(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files multiFlag
	fs.Var(&files, "f", "Policy YAML file or directory (repeatable; - for stdin).")
	var o policytest.Overrides
	fs.StringVar(&o.FailsafeInbound, "failsafe-inbound", "", "The agents' inbound failsafe ports, replacing the test files' (default: the files' or the agents' defaults).")
	fs.StringVar(&o.FailsafeOutbound, "failsafe-outbound", "", "The agents' outbound failsafe ports, replacing the test files' (default: the files' or the agents' defaults).")
	verbose := fs.Bool("v", false, "Print the trace of every case, not only of those that fail.")
	var out outputFlags
	out.register(fs)
	testFiles, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitPassed
		}
		return exitInvalid
	}
	report, err := runTestFiles(testFiles, files, o, stdin, stderr)
	if err == nil {
		err = out.check()
	}
	if err != nil {
		fmt.Fprintln(stderr, "nodefw:", err)
		return exitInvalid
	}
	if err := out.write(stdout, report, func(w io.Writer, st policytest.Style) error {
		return policytest.WriteResults(w, report.Results, *verbose, st)
	}); err != nil {
		fmt.Fprintln(stderr, "nodefw:", err)
		return exitInvalid
	}
	if report.Failed > 0 {
		return exitFailed
	}
	return exitPassed
}

func runTestFiles(testFiles, policyFiles []string, o policytest.Overrides, stdin io.Reader, stderr io.Writer) (testReport, error) {
	var report testReport
	if len(policyFiles) == 0 {
		return report, errors.New("test: -f (policy files) is required")
	}
	if len(testFiles) == 0 {
		return report, errors.New("test: name at least one test file")
	}
	if slices.Contains(policyFiles, "-") && slices.Contains(testFiles, "-") {
		return report, errors.New("test: only one of -f and the test files can read stdin")
	}
	policies, err := policytest.ReadPolicies(policyFiles, stdin)
	if err != nil {
		return report, err
	}
	for _, path := range testFiles {
		data, err := policytest.ReadFile(path, stdin)
		if err != nil {
			return report, err
		}
		f, err := policytest.ParseFile(data)
		if err != nil {
			return report, fmt.Errorf("%s: %w", path, err)
		}
		results, problems, err := policytest.Run(f, policies, o)
		if err != nil {
			return report, fmt.Errorf("%s: %w", path, err)
		}
		for _, p := range problems {
			fmt.Fprintf(stderr, "warning: policy %s: %s\n", p.Policy, p.Message)
		}
		for _, r := range results {
			if len(testFiles) > 1 {
				r.Case.Name = filepath.Base(path) + ": " + r.Case.Name
			}
			report.Results = append(report.Results, r)
			if r.Pass {
				report.Passed++
			} else {
				report.Failed++
			}
		}
	}
	return report, nil
}

// parseInterleaved parses flags that may come after the arguments
// (`nodefw test cases.yaml -f policies/`) and returns the arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return rest, nil
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
