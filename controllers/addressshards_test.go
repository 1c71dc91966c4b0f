package controllers

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/addressshard"
	"github.com/nodefw/nodefw/internal/envtesting"
)

// shardsOf are the shards there are of the set called name, by name.
func shardsOf(name string) (map[string]*appsv1.ControllerRevision, error) {
	var list appsv1.ControllerRevisionList
	if err := k8sClient.List(context.Background(), &list, client.InNamespace(revisionNamespace),
		client.MatchingLabels{addressshard.LabelSet: addressshard.SetHash(name)}); err != nil {
		return nil, err
	}
	out := map[string]*appsv1.ControllerRevision{}
	for i := range list.Items {
		if ref, ok := addressshard.RefOf(&list.Items[i]); ok && ref.Set == name {
			out[ref.Name] = &list.Items[i]
		}
	}
	return out, nil
}

// agentInput is the set called name as an agent assembles it from its
// shards, its entries sorted; ok is false when the set is missing.
func agentInput(name string) (entries []string, ok bool, err error) {
	shards, err := shardsOf(name)
	if err != nil {
		return nil, false, err
	}
	var refs []addressshard.Ref
	for _, cr := range shards {
		ref, _ := addressshard.RefOf(cr)
		refs = append(refs, ref)
	}
	picked := addressshard.Select(refs)
	if picked == nil {
		return nil, false, nil
	}
	entries = []string{}
	for _, ref := range picked {
		e, err := addressshard.Entries(shards[ref.Name])
		if err != nil {
			return nil, false, err
		}
		for _, a := range e {
			entries = append(entries, string(a))
		}
	}
	slices.Sort(entries)
	return entries, true, nil
}

// expectAgentInput waits until the shards of the set called name hold
// want (sorted), or, for nil, until there are none.
func expectAgentInput(t *testing.T, name string, want []string) {
	t.Helper()
	envtesting.Eventually(t, timeout, func() error {
		if want == nil {
			shards, err := shardsOf(name)
			if err != nil {
				return err
			}
			if len(shards) > 0 {
				return fmt.Errorf("%d shards of set %s left", len(shards), name)
			}
			return nil
		}
		got, ok, err := agentInput(name)
		switch {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("set %s has no complete group of shards", name)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			return fmt.Errorf("set %s as the agents read it (-want +got):\n%s", name, diff)
		}
		return nil
	})
}

// TestAddressSetShards: the shard controller writes a set's shards, a
// one-entry edit creates one shard and deletes the one it replaces and
// nothing else, a set growing past its shards' size is written in a new
// group before the old is deleted, and the shards go with the set.
func TestAddressSetShards(t *testing.T) {
	ctx := context.Background()
	const name = "t14s-blocklist"
	all := setFanOutEntries(5000)
	s := &fwv1.NodeFirewallAddressSet{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fwv1.NodeFirewallAddressSetSpec{Addresses: all}}
	if err := k8sClient.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), s) })
	expectAgentInput(t, name, sortedEntries(all))
	before, err := shardsOf(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 8 {
		t.Errorf("%d shards of 5,000 entries, want 8", len(before))
	}

	// The set's status written first: the edit's writes are the edit's.
	expectSetGeneration(t, name, s.Generation)
	writes := writesSnapshot()
	update(t, s, append(slices.Clone(all), "203.0.113.7"))
	expectAgentInput(t, name, sortedEntries(s.Spec.Addresses))
	envtesting.Eventually(t, timeout, func() error {
		after, err := shardsOf(name)
		if err != nil {
			return err
		}
		var gone, added []string
		for n := range before {
			if after[n] == nil {
				gone = append(gone, n)
			}
		}
		for n, cr := range after {
			if before[n] == nil {
				added = append(added, n)
				if cr.Revision != s.Generation {
					return fmt.Errorf("the new shard %s is of generation %d, want %d", n, cr.Revision, s.Generation)
				}
			}
		}
		if len(gone) != 1 || len(added) != 1 {
			return fmt.Errorf("shards %v replaced by %v, want one by one", gone, added)
		}
		return nil
	})
	expectSetGeneration(t, name, s.Generation)
	d := deltaSince(writes, bytesSnapshot())
	for _, k := range []string{"*v1.ControllerRevision/create", "*v1.ControllerRevision/delete"} {
		if d.writes[k] != 1 {
			t.Errorf("%s × %d, want 1: %s", k, d.writes[k], d.kinds())
		}
	}

	// Grown past 16 shards' worth: a new group of 32.
	update(t, s, setFanOutEntries(20000))
	expectAgentInput(t, name, sortedEntries(s.Spec.Addresses))
	envtesting.Eventually(t, timeout, func() error {
		shards, err := shardsOf(name)
		if err != nil {
			return err
		}
		if len(shards) != 32 {
			return fmt.Errorf("%d shards of 20,000 entries, want 32", len(shards))
		}
		return nil
	})

	if err := k8sClient.Delete(ctx, s); err != nil {
		t.Fatal(err)
	}
	expectAgentInput(t, name, nil)
}

// update makes s, as stored, hold addrs.
func update(t *testing.T, s *fwv1.NodeFirewallAddressSet, addrs []fwv1.AddressSetEntry) {
	t.Helper()
	envtesting.Eventually(t, timeout, func() error {
		if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(s), s); err != nil {
			return err
		}
		s.Spec.Addresses = addrs
		return k8sClient.Update(context.Background(), s)
	})
}
