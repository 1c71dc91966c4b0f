package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
)

// setFanOutSize is the cluster and the blocklist of TestSetFanOut: `make
// bench` sets NODEFW_SETFANOUT_NODES=1000 and
// NODEFW_SETFANOUT_ENTRIES=100000.
func setFanOutSize() (nodes, entries int) {
	nodes, entries = 50, 2000
	if n, err := strconv.Atoi(os.Getenv("NODEFW_SETFANOUT_NODES")); err == nil && n > 0 {
		nodes = n
	}
	if n, err := strconv.Atoi(os.Getenv("NODEFW_SETFANOUT_ENTRIES")); err == nil && n > 1 {
		entries = n
	}
	return nodes, entries
}

// setFanOutEntries are n distinct blocklist entries, a quarter each of
// IPv4 /32s, IPv4 /24s, IPv6 /48s and IPv6 /64s.
func setFanOutEntries(n int) []fwv1.AddressSetEntry {
	out := make([]fwv1.AddressSetEntry, 0, n)
	for i := range n {
		k := 2 * (i / 4)
		var s string
		switch i % 4 {
		case 0:
			s = fmt.Sprintf("10.%d.%d.%d", k/65536, k/256%256, k%256)
		case 1:
			s = fmt.Sprintf("20.%d.%d.0/24", k/256, k%256)
		case 2:
			s = fmt.Sprintf("fd00:%x::/48", k)
		default:
			s = fmt.Sprintf("fd01:0:0:%x::/64", k)
		}
		out = append(out, fwv1.AddressSetEntry(s))
	}
	return out
}

// writeDelta is what the controller wrote between two snapshots: writes
// and bytes by kind and verb.
type writeDelta struct {
	writes, bytes map[string]int64
}

func deltaSince(writes, written map[string]int64) writeDelta {
	d := writeDelta{writes: map[string]int64{}, bytes: map[string]int64{}}
	for k, v := range writesSnapshot() {
		if n := v - writes[k]; n > 0 {
			d.writes[k] = n
		}
	}
	for k, v := range bytesSnapshot() {
		if n := v - written[k]; n > 0 {
			d.bytes[k] = n
		}
	}
	return d
}

func (d writeDelta) total() (writes, bytes int64) {
	for _, v := range d.writes {
		writes += v
	}
	for _, v := range d.bytes {
		bytes += v
	}
	return writes, bytes
}

// perNodeWrites counts the writes of NodeFirewalls: per-node objects.
func (d writeDelta) perNodeWrites() int64 {
	var n int64
	for k, v := range d.writes {
		if strings.HasPrefix(k, "*v1alpha1.NodeFirewall/") {
			n += v
		}
	}
	return n
}

// kinds lists the writes as kind/verb=count:bytes, sorted, without spaces.
func (d writeDelta) kinds() string {
	var parts []string
	for k, v := range d.writes {
		parts = append(parts, fmt.Sprintf("%s=%d:%d", strings.TrimPrefix(k, "*"), v, d.bytes[resourceKey(k)]))
	}
	if len(parts) == 0 {
		return "none"
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// resourceKey is the wire key ("resource/verb", see writeKey) of a write
// counted by kind ("*v1.Kind/verb").
func resourceKey(kindVerb string) string {
	kind, verb, _ := strings.Cut(kindVerb, "/")
	if i := strings.LastIndexByte(kind, '.'); i >= 0 {
		kind = kind[i+1:]
	}
	res := strings.ToLower(kind)
	if strings.HasSuffix(res, "y") {
		res = strings.TrimSuffix(res, "y") + "ies"
	} else {
		res += "s"
	}
	return res + "/" + verb
}

// TestSetFanOut measures what a change of a large address set and a node
// join cost the cluster, with simulated agents that watch the address
// sets' shards as the agent does (setWatchers): a policy selecting every
// node drops what comes from a blocklist of two NodeFirewallAddressSets and
// accepts etcd from the control-plane nodes (a nodeSelector peer, whose
// managed set the controller keeps).
//
//   - One entry added to the blocklist's second set: the time until every
//     agent's watch has delivered the shard holding it, and the bytes
//     written: the user's update and whatever the controller writes (one
//     shard created, the one it replaces deleted, the set's status), which
//     must not be a NodeFirewall and must not grow with the nodes.
//   - A control-plane node joins: the time until every agent's watch has
//     delivered a shard of the managed set holding its address, and the
//     bytes written: the Node's and the controller's, which may create the
//     new node's NodeFirewall and must write no other.
func TestSetFanOut(t *testing.T) {
	nodes, entries := setFanOutSize()
	ctx := context.Background()
	const prefix, role = "t14f-", "t14f.nodefw.io/control-plane"
	names := []string{prefix + "blocklist-a", prefix + "blocklist-b"}
	all := setFanOutEntries(entries)
	for i, name := range names {
		part := all[:len(all)/2]
		if i == 1 {
			part = all[len(all)/2:]
		}
		s := &fwv1.NodeFirewallAddressSet{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fwv1.NodeFirewallAddressSetSpec{Addresses: part}}
		if err := k8sClient.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), s) })
	}
	// The cluster: three control-plane nodes with addresses, the rest
	// workers.
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			labels := map[string]string{"t14f": "yes"}
			if i < 3 {
				labels[role] = ""
			}
			n := newNode(t, fmt.Sprintf("%snode-%04d", prefix, i), labels)
			if i < 3 {
				setNodeAddresses(t, n, fmt.Sprintf("10.114.0.%d", i+1))
			}
		}()
	}
	wg.Wait()
	cp := fwv1.Peer{NodeSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: role, Operator: metav1.LabelSelectorOpExists}}}}
	cpSet, _ := cp.SetName()
	policy := newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: prefix + "policy"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"t14f": "yes"}},
			Rules: []fwv1.Rule{
				{Name: "blocklist", Chain: fwv1.ChainInput, Action: fwv1.ActionDrop,
					From: []fwv1.Peer{{AddressSet: names[0]}, {AddressSet: names[1]}}},
				{Name: "etcd", Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP,
					Ports: []fwv1.PortRange{{Port: 2379, EndPort: 2380}}, From: []fwv1.Peer{cp}},
			},
		},
	})
	// Settled: every node's NodeFirewall written, the sets' statuses
	// written, the managed set holding the control planes.
	expectSet(t, cpSet, []string{"10.114.0.1", "10.114.0.2", "10.114.0.3"}, true)
	envtesting.Eventually(t, 5*time.Minute, func() error {
		var list fwv1.NodeFirewallList
		if err := k8sClient.List(ctx, &list); err != nil {
			return err
		}
		n := 0
		for _, nfw := range list.Items {
			if strings.HasPrefix(nfw.Name, prefix) && len(nfw.Spec.Policies) > 0 {
				n++
			}
		}
		if n != nodes {
			return fmt.Errorf("%d of %d NodeFirewalls written", n, nodes)
		}
		for _, name := range names {
			s := &fwv1.NodeFirewallAddressSet{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, s); err != nil {
				return err
			}
			if r := meta.FindStatusCondition(s.Status.Conditions, fwv1.ConditionReady); r == nil || r.ObservedGeneration != s.Generation {
				return fmt.Errorf("set %s status not written: %+v", name, s.Status)
			}
		}
		p, err := getPolicy(policy.Name)
		if err != nil {
			return err
		}
		if p.Status.MatchedNodes != int32(nodes) {
			return fmt.Errorf("policy matches %d nodes, want %d", p.Status.MatchedNodes, nodes)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // let the controller's last writes land

	// Every set's shards written.
	for _, name := range append(slices.Clone(names), cpSet) {
		s := &fwv1.NodeFirewallAddressSet{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, s); err != nil {
			t.Fatal(err)
		}
		expectAgentInput(t, name, sortedEntries(s.Spec.Addresses))
	}
	var shards appsv1.ControllerRevisionList
	if err := k8sClient.List(ctx, &shards, client.InNamespace(revisionNamespace)); err != nil {
		t.Fatal(err)
	}
	watchers, err := startSetWatchers(restConfig, nodes, revisionNamespace, shards.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	defer watchers.stop()

	// One entry added to the second set.
	second := &fwv1.NodeFirewallAddressSet{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: names[1]}, second); err != nil {
		t.Fatal(err)
	}
	second.Spec.Addresses = append(second.Spec.Addresses, "203.0.113.7")
	userBody, err := json.Marshal(second)
	if err != nil {
		t.Fatal(err)
	}
	writes, written := writesSnapshot(), bytesSnapshot()
	receivedBefore, cpuBefore := watchers.received.Load(), cpuTimes()
	changed := second.Generation + 1
	setArrivals, err := watchers.await(setTarget{name: names[1], contains: `"203.0.113.7"`}, 2*time.Minute, func() error {
		return k8sClient.Update(ctx, second)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The controller's answer (the set's status) is part of the change.
	expectSetGeneration(t, names[1], changed)
	time.Sleep(2 * time.Second)
	setDelta := deltaSince(writes, written)
	setReceived, setCPU := watchers.received.Load()-receivedBefore, cpuSince(cpuBefore)
	setTook := setArrivals.last()
	if n := setDelta.perNodeWrites(); n != 0 {
		t.Errorf("a set change made the controller write %d NodeFirewalls: %s", n, setDelta.kinds())
	}
	// Writes that do not grow with the nodes or the set: one shard
	// replaced, and the set's status.
	for k, want := range map[string]int64{"*v1.ControllerRevision/create": 1, "*v1.ControllerRevision/delete": 1, "*v1alpha1.NodeFirewallAddressSet/status-patch": 1} {
		if setDelta.writes[k] != want {
			t.Errorf("a set change made the controller write %s × %d, want %d: %s", k, setDelta.writes[k], want, setDelta.kinds())
		}
	}
	setWrites, setBytes := setDelta.total()
	t.Logf("set change: %d agents' inputs after %v (%v); user's update %d bytes; controller %d writes, %d bytes (%s); watches delivered %d bytes; CPU until settled: %s",
		nodes, setTook.Round(time.Millisecond), setArrivals, len(userBody), setWrites, setBytes, setDelta.kinds(), setReceived, setCPU)

	// A control-plane node joins.
	writes, written = writesSnapshot(), bytesSnapshot()
	receivedBefore, cpuBefore = watchers.received.Load(), cpuTimes()
	joining := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: prefix + "joining", Labels: map[string]string{"t14f": "yes", role: ""}}}
	var nodeBytes int
	joinArrivals, err := watchers.await(setTarget{name: cpSet, contains: `"10.114.0.99"`}, 2*time.Minute, func() error {
		created, _ := json.Marshal(joining)
		if err := k8sClient.Create(ctx, joining); err != nil {
			return err
		}
		t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), joining) })
		// As its kubelet: the node's addresses are its status.
		joining.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.114.0.99"}}
		updated, _ := json.Marshal(joining)
		nodeBytes = len(created) + len(updated)
		return k8sClient.Status().Update(ctx, joining)
	})
	if err != nil {
		t.Fatal(err)
	}
	expectSet(t, cpSet, []string{"10.114.0.1", "10.114.0.2", "10.114.0.3", "10.114.0.99"}, true)
	envtesting.Eventually(t, time.Minute, func() error {
		nfw, err := envtesting.GetNodeFirewall(k8sClient, joining.Name)
		if err != nil {
			return err
		}
		if len(nfw.Spec.Policies) == 0 {
			return fmt.Errorf("NodeFirewall of %s names no policy", joining.Name)
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	joinDelta := deltaSince(writes, written)
	joinReceived, joinCPU := watchers.received.Load()-receivedBefore, cpuSince(cpuBefore)
	joinTook := joinArrivals.last()
	if n := joinDelta.writes["*v1alpha1.NodeFirewall/update"]; n != 0 {
		t.Errorf("a node join made the controller update %d NodeFirewalls: %s", n, joinDelta.kinds())
	}
	if n := joinDelta.writes["*v1alpha1.NodeFirewall/create"]; n != 1 {
		t.Errorf("a node join made the controller create %d NodeFirewalls, want the new node's: %s", n, joinDelta.kinds())
	}
	// The managed set's one shard replaced, once.
	for _, k := range []string{"*v1.ControllerRevision/create", "*v1.ControllerRevision/delete"} {
		if n := joinDelta.writes[k]; n != 1 {
			t.Errorf("a node join made the controller write %s × %d, want 1: %s", k, n, joinDelta.kinds())
		}
	}
	joinWrites, joinBytes := joinDelta.total()
	t.Logf("node join: %d agents' inputs after %v (%v); the node's writes %d bytes; controller %d writes, %d bytes (%s); watches delivered %d bytes; CPU until settled: %s",
		nodes, joinTook.Round(time.Millisecond), joinArrivals, nodeBytes, joinWrites, joinBytes, joinDelta.kinds(), joinReceived, joinCPU)

	// `make bench` reads this line into its report.
	fmt.Printf("SETFANOUT nodes=%d entries=%d set_ms=%d set_first_ms=%d set_update_ms=%d set_user_bytes=%d set_controller_writes=%d set_controller_bytes=%d set_node_writes=%d set_watch_bytes=%d set_kinds=%s join_ms=%d join_node_bytes=%d join_controller_writes=%d join_controller_bytes=%d join_nfw_updates=%d join_watch_bytes=%d join_kinds=%s\n",
		nodes, entries, setTook.Milliseconds(), setArrivals.at[0].Milliseconds(), setArrivals.change.Milliseconds(), len(userBody), setWrites, setBytes, setDelta.perNodeWrites(), setReceived, setDelta.kinds(),
		joinTook.Milliseconds(), nodeBytes, joinWrites, joinBytes, joinDelta.writes["*v1alpha1.NodeFirewall/update"], joinReceived, joinDelta.kinds())
}

// expectSetGeneration waits for the controller to have written the status
// of the set name at generation gen or later.
func expectSetGeneration(t *testing.T, name string, gen int64) {
	t.Helper()
	envtesting.Eventually(t, time.Minute, func() error {
		s := &fwv1.NodeFirewallAddressSet{}
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, s); err != nil {
			return err
		}
		if s.Generation < gen || s.Status.ObservedGeneration != s.Generation {
			return fmt.Errorf("set %s at generation %d, status at %d", name, s.Generation, s.Status.ObservedGeneration)
		}
		return nil
	})
}

// bytesSnapshot is the controller's bytes on the wire by "resource/verb"
// (wireBytes); writesSnapshot counts writes by kind.
func bytesSnapshot() map[string]int64 { return wireSnapshot() }

// sortedEntries are es as strings, sorted.
func sortedEntries(es []fwv1.AddressSetEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = string(e)
	}
	slices.Sort(out)
	return out
}
