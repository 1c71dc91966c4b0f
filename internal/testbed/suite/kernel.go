package suite

import (
	"context"
	"fmt"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/nft"
	"github.com/nodefw/nodefw/internal/resolve"
)

// agentCompileOptions are the compile options of the test bed's agents:
// SSH the only inbound failsafe (testbed.Options.FailsafeInbound), the
// default outbound ones, set lookups on.
func agentCompileOptions() (compile.Options, error) {
	inbound, err := compile.ParseFailsafes("tcp:22")
	if err != nil {
		return compile.Options{}, err
	}
	return compile.Options{FailsafeInbound: inbound, FailsafeOutbound: compile.DefaultFailsafeOutbound(), SetLookups: true}, nil
}

// KernelMismatches compares every node with the resolver's output for the
// policies and nodes stored now: its NodeFirewall's spec, and its kernel
// table with that output compiled as the agent compiles it (the rules'
// fingerprints, nft's Drift). It returns one line per node that differs,
// none when all agree.
func (c *Cluster) KernelMismatches(ctx context.Context) ([]string, error) {
	var ps fwv1.NodeFirewallPolicyList
	var ns corev1.NodeList
	if err := c.Client.List(ctx, &ps); err != nil {
		return nil, err
	}
	if err := c.Client.List(ctx, &ns); err != nil {
		return nil, err
	}
	opts, err := agentCompileOptions()
	if err != nil {
		return nil, err
	}
	want := resolve.Resolve(resolve.Input{Policies: ps.Items, Nodes: ns.Items})
	var out []string
	for _, n := range c.Nodes {
		nfw := &fwv1.NodeFirewall{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, nfw); err != nil {
			return nil, err
		}
		if diff := cmp.Diff(want.Nodes[n.Name], nfw.Spec); diff != "" {
			out = append(out, fmt.Sprintf("%s: NodeFirewall differs from the resolver (-want +got):\n%s", n.Name, diff))
			continue
		}
		rs, err := compile.Compile(want.Nodes[n.Name], opts)
		if err != nil {
			return nil, err
		}
		p, err := nft.New(n.NS.Path(), compile.DefaultTable)
		if err != nil {
			return nil, err
		}
		drift, err := p.Drift(rs)
		p.Close()
		if err != nil {
			return nil, err
		}
		if drift != "" {
			out = append(out, fmt.Sprintf("%s: kernel differs from the resolver: %s", n.Name, drift))
		}
	}
	return out, nil
}
