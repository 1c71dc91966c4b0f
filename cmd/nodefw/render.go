package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/policytest"
	"github.com/nodefw/nodefw/internal/resolve"
)

// runRender prints the ruleset a node with the given labels would get from
// the policies in the given files, offline, for review in pull requests.
func runRender(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	var files multiFlag
	fs.Var(&files, "f", "Policy YAML file or directory (repeatable; - for stdin).")
	nodeLabels := fs.String("node-labels", "", "The node's labels, as k=v,k2=v2.")
	nodeName := fs.String("node-name", "node", "The node's name.")
	table := fs.String("table", compile.DefaultTable, "The agent's table name.")
	inbound := fs.String("failsafe-inbound", compile.FormatFailsafes(compile.DefaultFailsafeInbound()), "The agent's inbound failsafe ports.")
	setLookups := fs.Bool("set-lookups", true, "Render runs of simple rules as set lookups, as agents do by default; false renders linear rules, as an agent with --set-lookups=false programs.")
	outbound := fs.String("failsafe-outbound", compile.FormatFailsafes(compile.DefaultFailsafeOutbound()), "The agent's outbound failsafe ports.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(files) == 0 {
		return errors.New("render: -f is required")
	}
	policies, err := policytest.ReadPolicies(files, stdin)
	if err != nil {
		return err
	}
	lbls, err := labels.ConvertSelectorToLabelsMap(*nodeLabels)
	if err != nil {
		return fmt.Errorf("--node-labels: %w", err)
	}
	in, err := compile.ParseFailsafes(*inbound)
	if err != nil {
		return fmt.Errorf("--failsafe-inbound: %w", err)
	}
	out, err := compile.ParseFailsafes(*outbound)
	if err != nil {
		return fmt.Errorf("--failsafe-outbound: %w", err)
	}
	node := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: *nodeName, Labels: lbls}}
	res := resolve.Resolve(resolve.Input{
		Policies:  policies,
		Nodes:     []corev1.Node{node},
		Failsafes: resolve.Failsafes{Inbound: in, Outbound: out},
	})
	for _, p := range res.Problems {
		fmt.Fprintf(stderr, "warning: policy %s: %s\n", p.Policy, p.Message)
	}
	rs, err := compile.Compile(res.Nodes[node.Name], compile.Options{Table: *table, FailsafeInbound: in, FailsafeOutbound: out, SetLookups: *setLookups})
	if err != nil {
		return err
	}
	var matched []string
	for _, ref := range res.Nodes[node.Name].Policies {
		matched = append(matched, ref.Name)
	}
	fmt.Fprintf(stdout, "# node %s %v: policies %s\n", node.Name, lbls, strings.Join(matched, ", "))
	_, err = io.WriteString(stdout, compile.Render(rs))
	return err
}
