package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/importer"
)

// runImport translates iptables-save or iptables -S output into policy YAML.
// Every line it cannot translate is reported on stderr with its number,
// then a summary. With --strict it fails when the policy does less or
// otherwise than the ruleset: a filter rule skipped or translated with a
// caveat, another difference reported, or a warning about the --ipset file.
// The sets of --ipset follow the policy as further YAML documents.
func runImport(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	file := fs.String("f", "-", "iptables-save or iptables -S output to read; - for stdin.")
	name := fs.String("name", "", "The policy's name.")
	selector := fs.String("node-selector", "", "matchLabels for the policy's node selector, as k=v,k2=v2; empty selects every node.")
	priority := fs.Int("priority", 0, "The policy's priority (0-10000); omitted leaves the default (1000).")
	mode := fs.String("mode", "", "Enforce or Audit; empty leaves the default (Enforce).")
	ipsetFile := fs.String("ipset", "", "`ipset save` output: its hash:ip and hash:net sets become NodeFirewallAddressSets, written after the policy, for the rules' -m set --match-set.")
	strict := fs.Bool("strict", false, "Fail (exit 1) when a filter rule is skipped or imported with a change, or another difference is reported; the YAML is written all the same.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	in := stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	sel, err := metav1.ParseToLabelSelector(*selector)
	if err != nil {
		return fmt.Errorf("--node-selector: %w", err)
	}
	opts := importer.Options{Name: *name, NodeSelector: *sel, Mode: fwv1.PolicyMode(*mode)}
	if flagSet(fs, "priority") {
		if *priority < 0 || *priority > 10000 {
			return fmt.Errorf("--priority: %s is outside 0-10000", strconv.Itoa(*priority))
		}
		opts.Priority = ptr.To(int32(*priority))
	}
	if *ipsetFile != "" {
		f, err := os.Open(*ipsetFile)
		if err != nil {
			return fmt.Errorf("--ipset: %w", err)
		}
		defer f.Close()
		opts.IPSet = f
	}
	res, err := importer.Import(in, opts)
	if err != nil {
		return err
	}
	setWarnings := 0
	for _, w := range res.Warnings {
		if w.Source != "" {
			if !w.Exact {
				setWarnings++
			}
			fmt.Fprintf(stderr, "%s line %d: %s: %s\n", w.Source, w.Line, w.Reason, w.Text)
			continue
		}
		fmt.Fprintf(stderr, "line %d: %s: %s\n", w.Line, w.Reason, w.Text)
	}
	if err := importer.WriteYAML(stdout, res.Policy); err != nil {
		return err
	}
	for _, s := range res.AddressSets {
		if err := importer.WriteAddressSetYAML(stdout, s); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "nodefw import: %s\n", res.Summary)
	if *ipsetFile != "" {
		fmt.Fprintf(stderr, "nodefw import: %d address sets, %d ipset warnings\n", len(res.AddressSets), setWarnings)
	}
	if *strict && (!res.Summary.Exact() || setWarnings > 0) {
		return fmt.Errorf("--strict: the policy does not do all the ruleset did (see the lines above)")
	}
	return nil
}
