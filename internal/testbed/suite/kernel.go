package suite

import (
	"context"
	"fmt"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/nft"
	"github.com/nodefw/nodefw/internal/resolve"
	"github.com/nodefw/nodefw/internal/revision"
	"github.com/nodefw/nodefw/internal/testbed"
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
	want := resolve.Resolve(resolve.Input{Policies: ps.Items, Nodes: ns.Items, RevisionNamespace: testbed.ManagerNamespace})
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
		// What the agent compiles: the revisions' rules in place, and the
		// address sets they look up.
		spec, err := c.expand(ctx, nfw.Spec)
		if err != nil {
			return nil, err
		}
		nodeOpts := opts
		if nodeOpts.AddressSets, err = c.addressSets(ctx, spec); err != nil {
			return nil, err
		}
		rs, err := compile.Compile(spec, nodeOpts)
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

// expand puts the rules of the revisions a NodeFirewall names or follows
// in place.
func (c *Cluster) expand(ctx context.Context, spec fwv1.NodeFirewallSpec) (fwv1.NodeFirewallSpec, error) {
	spec, err := envtesting.PinFollowed(ctx, c.Client, testbed.ManagerNamespace, spec)
	if err != nil {
		return fwv1.NodeFirewallSpec{}, err
	}
	rules := map[string][]fwv1.Rule{}
	for _, name := range revision.Names(&spec) {
		cr := &appsv1.ControllerRevision{}
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: testbed.ManagerNamespace, Name: name}, cr); err != nil {
			return fwv1.NodeFirewallSpec{}, err
		}
		rs, err := revision.Rules(cr)
		if err != nil {
			return fwv1.NodeFirewallSpec{}, err
		}
		rules[name] = rs
	}
	return revision.Expand(spec, rules)
}

// addressSets are the contents of the address sets spec looks up, read
// from the sets themselves (the agent reads their shards, which the
// controller keeps holding the same); a missing one is left out, as the
// agent leaves it out.
func (c *Cluster) addressSets(ctx context.Context, spec fwv1.NodeFirewallSpec) (compile.AddressSets, error) {
	sets := compile.AddressSets{}
	for _, name := range compile.AddressSetNames(spec) {
		s := &fwv1.NodeFirewallAddressSet{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, s); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, err
		}
		prefixes, err := compile.ParseAddressSet(s.Spec.Addresses)
		if err != nil {
			continue
		}
		sets[name] = prefixes
	}
	return sets, nil
}
