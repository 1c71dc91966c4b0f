package agent

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// The agent reads NodeFirewallAddressSets, the contents of its rules'
// peers, and writes none.
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewalladdresssets,verbs=get;list;watch

// addressSetRefs are the names of the NodeFirewallAddressSets the node's
// rules last looked up, for the watch to pass only changes of those.
type addressSetRefs struct {
	names atomic.Pointer[map[string]bool]
}

// has reports whether the node's rules look up the set called name.
func (a *addressSetRefs) has(name string) bool {
	m := a.names.Load()
	return m != nil && (*m)[name]
}

func (a *addressSetRefs) store(names []string) {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	a.names.Store(&m)
}

// addressSets reads from the cache the NodeFirewallAddressSets the rules
// of spec look up (the spec the agent compiles, wherever its rules are
// stored), parsed, and the fingerprint of their names and generations,
// which tells a change of contents from drift. A set that is missing, or
// one with an address that does not parse (written past validation), is
// left out: its peers match nothing, as the policy's status says.
func (r *Reconciler) addressSets(ctx context.Context, spec fwv1.NodeFirewallSpec) (compile.AddressSets, string, error) {
	names := compile.AddressSetNames(spec)
	r.setRefs.store(names)
	if r.parsed == nil {
		r.parsed = parsedSets{}
	}
	r.parsed.forget(names)
	if len(names) == 0 {
		return nil, "", nil
	}
	sets := make(compile.AddressSets, len(names))
	var gens strings.Builder
	for _, name := range names {
		s := &fwv1.NodeFirewallAddressSet{}
		if err := r.Client.Get(ctx, client.ObjectKey{Name: name}, s); err != nil {
			if apierrors.IsNotFound(err) {
				fmt.Fprintf(&gens, "%s=-;", name)
				continue
			}
			return nil, "", err
		}
		fmt.Fprintf(&gens, "%s=%s/%d;", name, s.UID, s.Generation)
		prefixes, err := r.parsed.prefixes(s)
		if err != nil {
			log.FromContext(ctx).Error(err, "address set has an invalid address; its peers match nothing", "set", name)
			continue
		}
		sets[name] = prefixes
	}
	return sets, gens.String(), nil
}

// addressSetRequests maps a NodeFirewallAddressSet event to the node's
// reconcile when its rules look the set up.
func (r *Reconciler) addressSetRequests(_ context.Context, obj client.Object) []reconcile.Request {
	if !r.setRefs.has(obj.GetName()) {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: r.NodeName}}}
}
