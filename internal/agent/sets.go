package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync/atomic"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/addressshard"
	"github.com/nodefw/nodefw/internal/compile"
)

// The agent reads the contents of its rules' peers from the shards the
// controller writes of every NodeFirewallAddressSet (internal/addressshard),
// ControllerRevisions of the controller's namespace, which it watches;
// not from the sets, whose every change would bring each agent the whole
// set. Its rights on them are a Role in that namespace
// (config/agent/rbac/revisions_role.yaml), not markers, which would grant
// them in every namespace.

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

// shardEntries are the decoded entries of the shards the sets were last
// made of, by shard name: a shard never changes, so it is decoded once.
type shardEntries map[string][]fwv1.AddressSetEntry

// addressSets reads from the cache the shards of the
// NodeFirewallAddressSets the rules of spec look up (the spec the agent
// compiles, wherever its rules are stored), assembles and parses each
// set, and returns them with the fingerprint of their versions (the names
// of the shards they are made of), which tells a change of contents from
// drift. A set without a complete group of shards is missing, as is one
// with an address that does not parse (written past validation): their
// peers match nothing, as the policy's status says.
func (r *Reconciler) addressSets(ctx context.Context, spec fwv1.NodeFirewallSpec) (compile.AddressSets, string, error) {
	names := compile.AddressSetNames(spec)
	r.setRefs.store(names)
	if r.parsed == nil {
		r.parsed = parsedSets{}
	}
	r.parsed.forget(names)
	if len(names) == 0 {
		r.shards = nil
		return nil, "", nil
	}
	sets := make(compile.AddressSets, len(names))
	used := shardEntries{}
	var versions strings.Builder
	for _, name := range names {
		entries, version, err := r.assemble(ctx, name, used)
		if err != nil {
			return nil, "", err
		}
		if version == "" {
			fmt.Fprintf(&versions, "%s=-;", name)
			continue
		}
		fmt.Fprintf(&versions, "%s=%s;", name, version)
		prefixes, err := r.parsed.prefixes(name, version, entries)
		if err != nil {
			log.FromContext(ctx).Error(err, "address set has an invalid address; its peers match nothing", "set", name)
			continue
		}
		sets[name] = prefixes
	}
	r.shards = used
	return sets, versions.String(), nil
}

// assemble reads the shards of the set called name and returns its
// entries, those of the shards addressshard.Select picks in index order,
// and its version, a hash of their names; "" when the set is missing. The
// shards' entries are kept in used.
func (r *Reconciler) assemble(ctx context.Context, name string, used shardEntries) ([]fwv1.AddressSetEntry, string, error) {
	if r.ShardNamespace == "" {
		return nil, "", nil
	}
	// Read only, and a set's shards are a megabyte: no deep copies.
	var list appsv1.ControllerRevisionList
	if err := r.Client.List(ctx, &list, client.InNamespace(r.ShardNamespace),
		client.MatchingLabels{addressshard.LabelSet: addressshard.SetHash(name)}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, "", fmt.Errorf("listing the shards of address set %s: %w", name, err)
	}
	byName := make(map[string]*appsv1.ControllerRevision, len(list.Items))
	refs := make([]addressshard.Ref, 0, len(list.Items))
	for i := range list.Items {
		if ref, ok := addressshard.RefOf(&list.Items[i]); ok && ref.Set == name {
			refs = append(refs, ref)
			byName[ref.Name] = &list.Items[i]
		}
	}
	picked := addressshard.Select(refs)
	if picked == nil {
		return nil, "", nil
	}
	h := sha256.New()
	parts := make([][]fwv1.AddressSetEntry, len(picked))
	total := 0
	for i, ref := range picked {
		e, ok := r.shards[ref.Name]
		if !ok {
			var err error
			if e, err = addressshard.Entries(byName[ref.Name]); err != nil {
				// Not written by the controller: the set cannot be read.
				log.FromContext(ctx).Error(err, "address set shard does not decode; its peers match nothing", "set", name)
				return nil, "", nil
			}
		}
		used[ref.Name], parts[i] = e, e
		total += len(e)
		h.Write([]byte(ref.Name))
		h.Write([]byte{0})
	}
	entries := make([]fwv1.AddressSetEntry, 0, total)
	for _, e := range parts {
		entries = append(entries, e...)
	}
	return entries, hex.EncodeToString(h.Sum(nil))[:16], nil
}

// addressSetRequests maps an event of an address set's shard to the
// node's reconcile when its rules look the set up.
func (r *Reconciler) addressSetRequests(_ context.Context, obj client.Object) []reconcile.Request {
	if !r.setRefs.has(obj.GetAnnotations()[addressshard.AnnotationSet]) {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: r.NodeName}}}
}
