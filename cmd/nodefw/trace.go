package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/policytest"
	"github.com/nodefw/nodefw/internal/resolve"
)

// Exit codes of trace: the verdict, or why there is none.
const (
	exitAccept = 0
	// exitError: the trace could not run (a file, the cluster or the node
	// could not be read).
	exitError = 1
	// exitUsage: flags or packet are wrong.
	exitUsage = 2
	exitDrop  = 3
	// exitReject: the packet is rejected (ICMP port unreachable).
	exitReject = 4
)

// verdictExit is the exit code of a verdict.
var verdictExit = map[compile.Verdict]int{
	compile.VerdictAccept: exitAccept, compile.VerdictDrop: exitDrop, compile.VerdictReject: exitReject,
}

// usageError is an error of the command line rather than of what it
// names.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitCode reports an error on stderr and returns its exit code.
func exitCode(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, "nodefw:", err)
	if errors.As(err, new(usageError)) {
		return exitUsage
	}
	return exitError
}

// traceFlags are trace's flags.
type traceFlags struct {
	files, nodeFiles     multiFlag
	nodeLabels, nodeName string
	packet               policytest.Packet
	inbound, outbound    string
	live, kubeconfig     string
	output               outputFlags
}

func (f *traceFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.files, "f", "Policy YAML file or directory (repeatable; - for stdin). A NodeFirewallConfig among them gives the failsafes, as in the cluster; NodeFirewallAddressSets among them are what addressSet peers look up.")
	fs.Var(&f.nodeFiles, "node", "Node YAML file, as `kubectl get node -o yaml` prints it (repeatable).")
	fs.StringVar(&f.nodeLabels, "node-labels", "", "The labels of a node of its own, as k=v,k2=v2.")
	fs.StringVar(&f.nodeName, "node-name", "", `The node to trace: one of the --node files' nodes, or the name of the --node-labels node (default "node").`)
	fs.StringVar(&f.packet.Chain, "chain", "Input", "The chain that sees the packet: "+chainNames()+".")
	fs.StringVar(&f.packet.Proto, "proto", "", "tcp, udp, sctp, icmp, icmpv6 or an IP protocol number.")
	fs.StringVar(&f.packet.From, "from", "", "Source address, with a port if it matters: ADDR, ADDR:PORT or [ADDR]:PORT.")
	fs.StringVar(&f.packet.To, "to", "", "Destination address, with the port for tcp, udp and sctp: ADDR:PORT or [ADDR]:PORT.")
	fs.StringVar(&f.packet.InInterface, "in-interface", "", "The interface the packet comes in on (Input, Forward).")
	fs.StringVar(&f.packet.OutInterface, "out-interface", "", "The interface the packet leaves on (Forward, Output).")
	fs.StringVar(&f.packet.State, "state", "new", "Conntrack state: new, established, related or invalid.")
	fs.StringVar(&f.packet.ICMPType, "icmp-type", "", "ICMP or ICMPv6 type, by number or name (default echo-request).")
	fs.StringVar(&f.inbound, "failsafe-inbound", compile.FormatFailsafes(compile.DefaultFailsafeInbound()), "The agent's inbound failsafe ports.")
	fs.StringVar(&f.outbound, "failsafe-outbound", compile.FormatFailsafes(compile.DefaultFailsafeOutbound()), "The agent's outbound failsafe ports.")
	fs.StringVar(&f.live, "live", "", "Trace on the cluster's resolved NodeFirewall of this node instead of policy files (read-only).")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "With --live: path to a kubeconfig (default: $KUBECONFIG or ~/.kube/config).")
	f.output.register(fs)
}

// runTrace traces a packet through a node's firewall and prints the path;
// the exit code is the verdict.
func runTrace(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f traceFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitAccept
		}
		return exitUsage
	}
	t, err := f.trace(fs, stdin, stderr)
	if err != nil {
		return exitCode(stderr, err)
	}
	if err := f.output.write(stdout, t, func(w io.Writer, st policytest.Style) error {
		return policytest.WriteTrace(w, t, st)
	}); err != nil {
		return exitCode(stderr, err)
	}
	return verdictExit[t.Verdict]
}

func (f *traceFlags) trace(fs *flag.FlagSet, stdin io.Reader, stderr io.Writer) (policytest.Trace, error) {
	if fs.NArg() > 0 {
		return policytest.Trace{}, usagef("trace takes no arguments, got %q", fs.Args())
	}
	if err := f.output.check(); err != nil {
		return policytest.Trace{}, err
	}
	p, err := f.packet.Parse()
	if err != nil {
		return policytest.Trace{}, usagef("packet: %w", err)
	}
	failsafes, err := parseFailsafeFlags(f.inbound, f.outbound)
	if err != nil {
		return policytest.Trace{}, err
	}
	var node policytest.Node
	if f.live != "" {
		node, err = f.liveNode()
	} else {
		node, failsafes, err = f.offlineNode(fs, stdin, stderr, failsafes)
	}
	if err != nil {
		return policytest.Trace{}, err
	}
	return policytest.TraceNode(node, policytest.FailsafeOptions(failsafes), p), nil
}

// offlineNode resolves the policy files for the node the flags name. A
// NodeFirewallConfig among the files gives the failsafes in place of the
// flags', as in the cluster; it returns the failsafes in force.
func (f *traceFlags) offlineNode(fs *flag.FlagSet, stdin io.Reader, stderr io.Writer, failsafes resolve.Failsafes) (policytest.Node, resolve.Failsafes, error) {
	if len(f.files) == 0 {
		return policytest.Node{}, failsafes, usagef("trace: -f (policy files) or --live NODE is required")
	}
	if slices.Contains(f.files, "-") && slices.Contains(f.nodeFiles, "-") {
		return policytest.Node{}, failsafes, usagef("only one of -f and --node can read stdin")
	}
	input := stdinOnce(stdin)
	policies, config, err := policytest.ReadManifests(f.files, input())
	if err != nil {
		return policytest.Node{}, failsafes, err
	}
	// Peers: the address sets of the files; node peers resolve from the
	// --node files' nodes.
	_, sets, err := policytest.ReadPeerObjects(f.files, input())
	if err != nil {
		return policytest.Node{}, failsafes, err
	}
	if config != nil {
		settings, err := clusterconfig.For(&config.Spec)
		if err != nil {
			return policytest.Node{}, failsafes, fmt.Errorf("NodeFirewallConfig %s: %w", config.Name, err)
		}
		failsafes = resolve.Failsafes{Inbound: settings.FailsafeInbound, Outbound: settings.FailsafeOutbound}
	}
	nodes, err := policytest.ReadNodes(f.nodeFiles, stdin)
	if err != nil {
		return policytest.Node{}, failsafes, err
	}
	name, nodes, err := f.pickNode(fs, nodes)
	if err != nil {
		return policytest.Node{}, failsafes, err
	}
	node, problems, err := policytest.ResolveNodeWithSets(policies, nodes, sets, name, failsafes)
	for _, p := range problems {
		fmt.Fprintf(stderr, "warning: policy %s: %s\n", p.Policy, p.Message)
	}
	return node, failsafes, err
}

// pickNode is the name of the node to trace and every node: those of the
// --node files, and a node of its own with the --node-labels when they
// are given or no file is.
func (f *traceFlags) pickNode(fs *flag.FlagSet, nodes []corev1.Node) (string, []corev1.Node, error) {
	named := flagSet(fs, "node-name")
	has := func(name string) bool {
		return slices.ContainsFunc(nodes, func(n corev1.Node) bool { return n.Name == name })
	}
	if flagSet(fs, "node-labels") || len(nodes) == 0 {
		lbls, err := labels.ConvertSelectorToLabelsMap(f.nodeLabels)
		if err != nil {
			return "", nil, usagef("--node-labels: %w", err)
		}
		name := f.nodeName
		if !named {
			name = "node"
		}
		if has(name) {
			return "", nil, usagef("--node-labels: a node named %q is in the --node files; name this one with --node-name", name)
		}
		return name, append(nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}), nil
	}
	switch {
	case named && !has(f.nodeName):
		return "", nil, usagef("--node-name: no node %q in the --node files", f.nodeName)
	case named:
		return f.nodeName, nodes, nil
	case len(nodes) > 1:
		return "", nil, usagef("the --node files hold %d nodes: pick one with --node-name", len(nodes))
	}
	return nodes[0].Name, nodes, nil
}

// liveNode reads the node's resolved NodeFirewall from the cluster.
func (f *traceFlags) liveNode() (policytest.Node, error) {
	if len(f.files) > 0 || len(f.nodeFiles) > 0 || f.nodeLabels != "" || f.nodeName != "" {
		return policytest.Node{}, usagef("--live traces the cluster's NodeFirewall: it takes no -f, --node, --node-labels or --node-name")
	}
	c, err := clusterClient(f.kubeconfig)
	if err != nil {
		return policytest.Node{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var nfw fwv1.NodeFirewall
	if err := c.Get(ctx, client.ObjectKey{Name: f.live}, &nfw); err != nil {
		return policytest.Node{}, fmt.Errorf("reading the NodeFirewall of node %s: %w", f.live, err)
	}
	// Peers: the contents of the sets the rules look up, as the agent reads them.
	sets, err := policytest.ClusterAddressSets(ctx, c, nfw.Spec)
	if err != nil {
		return policytest.Node{}, err
	}
	return policytest.Node{Name: nfw.Name, Spec: nfw.Spec, AddressSets: sets}, nil
}

// parseFailsafeFlags reads --failsafe-inbound and --failsafe-outbound.
func parseFailsafeFlags(inbound, outbound string) (resolve.Failsafes, error) {
	in, err := compile.ParseFailsafes(inbound)
	if err != nil {
		return resolve.Failsafes{}, usagef("--failsafe-inbound: %w", err)
	}
	out, err := compile.ParseFailsafes(outbound)
	if err != nil {
		return resolve.Failsafes{}, usagef("--failsafe-outbound: %w", err)
	}
	return resolve.Failsafes{Inbound: in, Outbound: out}, nil
}

// flagSet reports whether the command line set the flag.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// chainNames lists the chains a packet may name.
func chainNames() string {
	names := make([]string, len(policytest.Chains))
	for i, c := range policytest.Chains {
		names[i] = string(c)
	}
	return strings.Join(names, ", ")
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
