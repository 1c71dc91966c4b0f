package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/policytest"
	"github.com/nodefw/nodefw/internal/resolve"
)

// runRender prints the ruleset a node with the given labels would get from
// the policies in the given files, offline, for review in pull requests.
func runRender(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	var files multiFlag
	fs.Var(&files, "f", "Policy YAML file or directory (repeatable; - for stdin). A NodeFirewallConfig among them stands in for the failsafe and set-lookups flags, as in the cluster; Nodes and NodeFirewallAddressSets among them are what peers resolve from, and a Node named --node-name is the node rendered.")
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
	input := stdinOnce(stdin)
	policies, config, err := policytest.ReadManifests(files, input())
	if err != nil {
		return err
	}
	// Peers: the nodes and address sets of the files.
	fileNodes, sets, err := policytest.ReadPeerObjects(files, input())
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
	lookups := *setLookups
	if config != nil {
		settings, err := clusterconfig.For(&config.Spec)
		if err != nil {
			return fmt.Errorf("NodeFirewallConfig %s: %w", config.Name, err)
		}
		in, out, lookups = settings.FailsafeInbound, settings.FailsafeOutbound, settings.SetLookups
	}
	nodes, node := renderedNode(fileNodes, *nodeName, lbls, *nodeLabels != "")
	lbls = node.Labels
	res := resolve.Resolve(resolve.Input{
		Policies:  policies,
		Nodes:     nodes,
		Failsafes: resolve.Failsafes{Inbound: in, Outbound: out},
	})
	contents, peerProblems, err := policytest.AddressSetsFor(policies, nodes, sets)
	if err != nil {
		return err
	}
	for _, p := range append(res.Problems, peerProblems...) {
		fmt.Fprintf(stderr, "warning: policy %s: %s\n", p.Policy, p.Message)
	}
	rs, err := compile.Compile(res.Nodes[node.Name], compile.Options{Table: *table, FailsafeInbound: in, FailsafeOutbound: out, SetLookups: lookups, AddressSets: contents})
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

// renderedNode returns the nodes peers resolve from and the node rendered:
// the files' Node named name, with the given labels when they are given,
// or a node of its own with the labels.
func renderedNode(fileNodes []corev1.Node, name string, lbls labels.Set, labelsGiven bool) ([]corev1.Node, corev1.Node) {
	nodes := slices.Clone(fileNodes)
	for i := range nodes {
		if nodes[i].Name == name {
			if labelsGiven {
				nodes[i].Labels = lbls
			}
			return nodes, nodes[i]
		}
	}
	node := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	return append(nodes, node), node
}

// stdinOnce reads stdin at most once and hands out its contents again for
// every reader asked, for files read more than once.
func stdinOnce(stdin io.Reader) func() io.Reader {
	var data []byte
	read := false
	return func() io.Reader {
		if !read {
			data, _ = io.ReadAll(stdin)
			read = true
		}
		return bytes.NewReader(data)
	}
}
