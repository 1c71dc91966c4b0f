package bench

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/addressshard"
	"github.com/nodefw/nodefw/internal/agent"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/nft"
)

// statsFirewall is the agent's Firewall, the Programmer, keeping the
// stats of the last Apply.
type statsFirewall struct {
	*nft.Programmer
	last nft.ApplyStats
}

func (f *statsFirewall) Apply(rs *compile.Ruleset) (nft.ApplyStats, error) {
	st, err := f.Programmer.Apply(rs)
	f.last = st
	return st, err
}

// agentTimes are the agent's reconciles of one-entry changes: whole, and
// the kernel's transaction within each.
type agentTimes struct {
	reconcile, flush []time.Duration
	stats            nft.ApplyStats
}

// benchBlocklistAgent times the agent's reconcile of a one-entry change of
// the blocklist, from reading its NodeFirewall and the changed set's
// shards to the table updated and the status written: the agent's
// Reconciler with the Programmer, in a namespace of its own. Its reads
// come from a fake API server, as the agent's informers serve them (each
// read a deep copy), holding the shards the controller writes; its status
// writes go there too.
func benchBlocklistAgent(t *testing.T, reps int, entries []netip.Prefix, extra netip.Prefix) agentTimes {
	half := len(entries) / 2
	entriesOf := func(ps []netip.Prefix) []v1alpha1.AddressSetEntry {
		out := make([]v1alpha1.AddressSetEntry, len(ps))
		for i, p := range ps {
			out[i] = v1alpha1.AddressSetEntry(p.String())
		}
		return out
	}
	const nodeName, shardNS = "bench-node", "nodefw-system"
	scheme := runtime.NewScheme()
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	utilruntime.Must(appsv1.AddToScheme(scheme))
	nfw := &v1alpha1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Generation: 1}, Spec: blocklistSpec()}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(nfw).WithStatusSubresource(&v1alpha1.NodeFirewall{}).Build()
	// writeShards does what the controller does for a set: the new shards
	// created, then those they replace deleted.
	shards := map[string][]*appsv1.ControllerRevision{}
	writeShards := func(s *v1alpha1.NodeFirewallAddressSet) {
		t.Helper()
		desired := addressshard.For(s, shardNS, len(shards[s.Name]))
		keep := map[string]bool{}
		for _, cr := range desired {
			keep[cr.Name] = true
			if err := c.Create(context.Background(), cr.DeepCopy()); client.IgnoreAlreadyExists(err) != nil {
				t.Fatal(err)
			}
		}
		for _, cr := range shards[s.Name] {
			if !keep[cr.Name] {
				if err := c.Delete(context.Background(), cr.DeepCopy()); err != nil {
					t.Fatal(err)
				}
			}
		}
		shards[s.Name] = desired
	}
	sets := map[string]*v1alpha1.NodeFirewallAddressSet{}
	for i, name := range blocklistNames {
		part := entries[:half]
		if i == 1 {
			part = entries[half:]
		}
		sets[name] = &v1alpha1.NodeFirewallAddressSet{
			ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Generation: 1},
			Spec:       v1alpha1.NodeFirewallAddressSetSpec{Addresses: entriesOf(part)},
		}
		writeShards(sets[name])
	}
	ns := netnstest.NewNS(t, "blocklist-agent")
	fw := &statsFirewall{Programmer: programmer(t, ns)}
	r := &agent.Reconciler{Client: c, Firewall: fw, Metrics: agent.NewMetrics(nil), NodeName: nodeName,
		Compile: options(), ResyncPeriod: time.Hour, ShardNamespace: shardNS}
	reconcileOnce := func() {
		t.Helper()
		if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Name: nodeName}}); err != nil {
			t.Fatal(err)
		}
	}
	reconcileOnce()
	if !fw.last.Incremental && fw.last.ElementsAdded == 0 {
		t.Fatalf("first reconcile applied no blocklist: %+v", fw.last)
	}
	second := sets[blocklistNames[1]]
	without := second.Spec.Addresses
	with := append(slices.Clone(without), v1alpha1.AddressSetEntry(extra.String()))
	var out agentTimes
	for i := range 2 * reps {
		updated := second.DeepCopy()
		updated.Generation++
		updated.Spec.Addresses = with
		if i%2 == 1 {
			updated.Spec.Addresses = without
		}
		sets[second.Name], second = updated, updated
		writeShards(updated)
		start := time.Now()
		reconcileOnce()
		took := time.Since(start)
		if !fw.last.Incremental || fw.last.ElementsAdded+fw.last.ElementsDeleted != 2 {
			t.Errorf("change %d: %+v, want one interval's two elements alone", i, fw.last)
		}
		out.reconcile, out.flush = append(out.reconcile, took), append(out.flush, fw.last.Flush)
		if i == 0 {
			out.stats = fw.last
		}
	}
	return out
}

// agentSide is each reconcile less its kernel transaction.
func (a agentTimes) agentSide() []time.Duration {
	out := make([]time.Duration, len(a.reconcile))
	for i := range a.reconcile {
		out[i] = a.reconcile[i] - a.flush[i]
	}
	return out
}

// addBlocklistAgentRows reports the agent's reconciles.
func addBlocklistAgentRows(r *report, size string, a agentTimes) {
	r.add(row{
		figure: fmt.Sprintf("one entry added to or removed from the %s-entry blocklist: the agent's reconcile (read, parse, compile, check, apply, status)", size),
		ours:   ms(median(a.reconcile)), peer: "—", ratio: "—", goal: "—", result: "—",
	})
	r.add(row{
		figure: fmt.Sprintf("one entry added to or removed from the %s-entry blocklist: the agent's reconcile, agent side (less the kernel's transaction)", size),
		ours:   ms(median(a.agentSide())), peer: "—", ratio: "—", goal: "—", result: "—",
	})
	r.add(row{
		figure: fmt.Sprintf("one entry added to or removed from the %s-entry blocklist: the agent's reconcile, the kernel's transaction", size),
		ours:   ms(median(a.flush)), peer: "—", ratio: "—", goal: "≤ 5 ms", result: verdict(median(a.flush) <= 5*time.Millisecond),
	})
	r.note("The agent's reconcile: the agent's Reconciler (internal/agent) with the Programmer, in a namespace of its own, " +
		"reconciling its node after the second set's generation changed by the one entry: it reads the NodeFirewall and both " +
		"sets (a deep copy each, as its informers' cache serves them), parses the entries that changed (the sets' prefixes " +
		"stay parsed and sorted from the generation before), compiles, checks the table and applies (the sorted prefixes " +
		"that changed are diffed and encoded alone, never the other 100,000), and writes its status to a fake API server. " +
		"Agent side is the reconcile less the kernel's transaction (ApplyStats.Flush); the watch event's delivery is not " +
		"in it (see the fan-out rows).")
}
