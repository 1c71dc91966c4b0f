package policytest

import (
	"context"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/resolve"
)

// ReadPeerObjects reads, from manifest files or directories (or - for
// stdin), what peers resolve from offline: Nodes (also inside NodeLists
// and Lists) and NodeFirewallAddressSets. Files without any are fine.
func ReadPeerObjects(paths []string, stdin io.Reader) ([]corev1.Node, []fwv1.NodeFirewallAddressSet, error) {
	var nodes []corev1.Node
	var sets []fwv1.NodeFirewallAddressSet
	for _, path := range paths {
		files, err := manifestFiles(path)
		if err != nil {
			return nil, nil, err
		}
		for _, f := range files {
			ns, err := readNodes(f, stdin)
			if err != nil {
				return nil, nil, err
			}
			nodes = append(nodes, ns...)
			err = eachDocument(f, stdin, func(kind string, doc []byte) error {
				if kind != "NodeFirewallAddressSet" {
					return nil
				}
				var s fwv1.NodeFirewallAddressSet
				if err := yaml.UnmarshalStrict(doc, &s); err != nil {
					return err
				}
				sets = append(sets, s)
				return nil
			})
			if err != nil {
				return nil, nil, err
			}
		}
	}
	return nodes, sets, nil
}

// AddressSetsFor resolves, as the controller does, the contents of every
// set the policies' peers look up: node peers from nodes, and the given
// NodeFirewallAddressSets. It returns the problems policy status would
// report for peers that do not resolve.
func AddressSetsFor(policies []fwv1.NodeFirewallPolicy, nodes []corev1.Node, sets []fwv1.NodeFirewallAddressSet) (compile.AddressSets, []resolve.Problem, error) {
	res := resolve.AddressSetsFor(policies, nodes, sets)
	out := make(compile.AddressSets, len(res.Managed)+len(sets))
	for i := range sets {
		if resolve.IsManagedSet(&sets[i]) {
			continue
		}
		prefixes, err := compile.ParseAddressSet(sets[i].Spec.Addresses)
		if err != nil {
			return nil, nil, fmt.Errorf("NodeFirewallAddressSet %s: %w", sets[i].Name, err)
		}
		out[sets[i].Name] = prefixes
	}
	for name, entries := range res.Managed {
		prefixes, err := compile.ParseAddressSet(entries)
		if err != nil {
			return nil, nil, fmt.Errorf("set %s: %w", name, err)
		}
		out[name] = prefixes
	}
	return out, res.Problems, nil
}

// ClusterAddressSets reads from a cluster the NodeFirewallAddressSets the
// rules of spec look up, as an agent does, parsed; a missing set, or one
// with an address that does not parse, is empty.
func ClusterAddressSets(ctx context.Context, c client.Reader, spec fwv1.NodeFirewallSpec) (compile.AddressSets, error) {
	out := compile.AddressSets{}
	for _, name := range compile.AddressSetNames(spec) {
		s := &fwv1.NodeFirewallAddressSet{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, s); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("reading NodeFirewallAddressSet %s: %w", name, err)
		}
		if prefixes, err := compile.ParseAddressSet(s.Spec.Addresses); err == nil {
			out[name] = prefixes
		}
	}
	return out, nil
}
