package bench

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// setFanOut is what the controllers package's TestSetFanOut measured in
// envtest, with simulated agents watching address sets: a one-entry
// change of a blocklist and a control-plane node join.
type setFanOut struct {
	nodes, entries int
	// The set change: until every agent's watch delivered it; the user's
	// update, the controller's writes, its NodeFirewall writes, and what
	// the watches delivered, in bytes.
	set, setFirst, setUpdate                    time.Duration
	setUser, setWrites, setBytes, setNodeWrites int
	setWatch                                    int64
	setKinds                                    string
	// The node join, the same; the Node's own writes in place of the
	// user's, and the NodeFirewalls the controller updated.
	join                                            time.Duration
	joinNode, joinWrites, joinBytes, joinNFWUpdates int
	joinWatch                                       int64
	joinKinds                                       string
}

// readSetFanOut finds the SETFANOUT line TestSetFanOut prints.
func readSetFanOut(path string) (setFanOut, error) {
	f, err := os.Open(path)
	if err != nil {
		return setFanOut{}, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if !strings.HasPrefix(line, "SETFANOUT ") {
			continue
		}
		var fo setFanOut
		var setMs, firstMs, updateMs, joinMs int64
		if _, err := fmt.Sscanf(line, "SETFANOUT nodes=%d entries=%d set_ms=%d set_first_ms=%d set_update_ms=%d set_user_bytes=%d set_controller_writes=%d set_controller_bytes=%d set_node_writes=%d set_watch_bytes=%d set_kinds=%s join_ms=%d join_node_bytes=%d join_controller_writes=%d join_controller_bytes=%d join_nfw_updates=%d join_watch_bytes=%d join_kinds=%s",
			&fo.nodes, &fo.entries, &setMs, &firstMs, &updateMs, &fo.setUser, &fo.setWrites, &fo.setBytes, &fo.setNodeWrites, &fo.setWatch, &fo.setKinds,
			&joinMs, &fo.joinNode, &fo.joinWrites, &fo.joinBytes, &fo.joinNFWUpdates, &fo.joinWatch, &fo.joinKinds); err != nil {
			return setFanOut{}, fmt.Errorf("%s: %q: %w", path, line, err)
		}
		fo.set, fo.join = time.Duration(setMs)*time.Millisecond, time.Duration(joinMs)*time.Millisecond
		fo.setFirst, fo.setUpdate = time.Duration(firstMs)*time.Millisecond, time.Duration(updateMs)*time.Millisecond
		return fo, nil
	}
	if err := s.Err(); err != nil {
		return setFanOut{}, err
	}
	return setFanOut{}, fmt.Errorf("%s: no SETFANOUT line (did TestSetFanOut pass?)", path)
}

// kindsText turns TestSetFanOut's list of writes (kind/verb=count:bytes,
// comma-separated) into words.
func kindsText(kinds string) string {
	if kinds == "none" {
		return "none"
	}
	var parts []string
	for _, k := range strings.Split(kinds, ",") {
		name, counts, _ := strings.Cut(k, "=")
		n, b, _ := strings.Cut(counts, ":")
		kind, verb, _ := strings.Cut(strings.TrimPrefix(name, "v1alpha1."), "/")
		var bytes int
		fmt.Sscan(b, &bytes)
		parts = append(parts, fmt.Sprintf("%s %s × %s (%s B)", kind, verb, n, thousands(bytes)))
	}
	return strings.Join(parts, "; ")
}

// benchSetFanOut adds the set fan-out figures `make bench` measured just
// before.
func benchSetFanOut(t *testing.T, r *report, path string) {
	fo, err := readSetFanOut(path)
	if err != nil {
		t.Fatal(err)
	}
	nodes, entries := thousands(fo.nodes), thousands(fo.entries)
	r.add(row{
		figure: fmt.Sprintf("set fan-out: one entry added to a %s-entry blocklist (two NodeFirewallAddressSets) named by a policy "+
			"selecting %s nodes, until every simulated agent's watch has delivered the shard holding it", entries, nodes),
		ours: ms(fo.set), peer: "—", ratio: "—", goal: "≤ 2 s", result: verdict(fo.set <= 2*time.Second),
	})
	r.add(row{
		figure: "set fan-out: the same change, until the user's update returned, and until the first agent's watch delivered it",
		ours:   fmt.Sprintf("%s; %s", ms(fo.setUpdate), ms(fo.setFirst)), peer: "—", ratio: "—", goal: "—", result: "—",
	})
	r.add(row{
		figure: "set fan-out: API bytes written for that change",
		ours: fmt.Sprintf("%s B: the user's update %s B; the controller %d writes, %s B (%s); NodeFirewall writes: %d",
			thousands(fo.setUser+fo.setBytes), thousands(fo.setUser), fo.setWrites, thousands(fo.setBytes), kindsText(fo.setKinds), fo.setNodeWrites),
		peer: "—", ratio: "—", goal: "no write per node; not growing with nodes × set size",
		result: verdict(fo.setNodeWrites == 0 && fo.setBytes <= 2*fo.setUser),
	})
	r.add(row{
		figure: fmt.Sprintf("set fan-out: bytes the %s agents' watches delivered for that change", nodes),
		ours:   fmt.Sprintf("%s B (%s B an agent)", thousands(int(fo.setWatch)), thousands(int(fo.setWatch)/max(1, fo.nodes))),
		peer:   "—", ratio: "—", goal: "—", result: "—",
	})
	r.add(row{
		figure: fmt.Sprintf("node join: a control-plane node joins a %s-node cluster whose policy has a control-plane peer, "+
			"until every simulated agent's watch has delivered a shard of the peer set with its address", nodes),
		ours: ms(fo.join), peer: "—", ratio: "—", goal: "—", result: "—",
	})
	r.add(row{
		figure: "node join: API bytes written",
		ours: fmt.Sprintf("%s B: the Node's create and status %s B; the controller %d writes, %s B (%s)",
			thousands(fo.joinNode+fo.joinBytes), thousands(fo.joinNode), fo.joinWrites, thousands(fo.joinBytes), kindsText(fo.joinKinds)),
		peer: "—", ratio: "—", goal: "no write of another node's NodeFirewall", result: verdict(fo.joinNFWUpdates == 0),
	})
	r.add(row{
		figure: fmt.Sprintf("node join: bytes the %s agents' watches delivered", nodes),
		ours:   fmt.Sprintf("%s B (%s B an agent)", thousands(int(fo.joinWatch)), thousands(int(fo.joinWatch)/max(1, fo.nodes))),
		peer:   "—", ratio: "—", goal: "—", result: "—",
	})
	r.note("Set fan-out and node join: `TestSetFanOut` of the controllers package in envtest (NODEFW_SETFANOUT_NODES=%d, "+
		"NODEFW_SETFANOUT_ENTRIES=%d), run by `make bench` before this benchmark. A policy selecting every node drops what "+
		"comes from a blocklist of two NodeFirewallAddressSets of %s entries each and accepts etcd from the control-plane "+
		"nodes (a nodeSelector peer, whose NodeFirewallAddressSet the controller keeps); three nodes are control planes. The "+
		"agents read each set from its shards, ControllerRevisions of the controller's namespace holding about 1,000 entries "+
		"each, assigned by a hash of the entry (docs/revisions.md). Each simulated agent watches the shards as the agent's "+
		"informer does, over a connection of its own; its input reflects a change when the watch event of the new shard "+
		"holding it has arrived (for the join, a shard of the managed set holding the new node's address). The time runs "+
		"from the user's update (the Node's create) to the last agent's event. Bytes written are the JSON bodies sent: the "+
		"user's update of the set, the Node's create and status update, and the controller's writes, counted by the test's "+
		"client. The test fails if a set change makes the controller write a NodeFirewall, or anything but one shard "+
		"created, the one it replaces deleted and the set's status patched, or a join makes it update a NodeFirewall. "+
		"What is written for a set change is the user's update and those three writes, whatever the number of nodes: no "+
		"per-node copy%s. What the watches deliver is the new shard and the deletion of the old one to every agent: "+
		"nodes × shard size, not nodes × set size.",
		fo.nodes, fo.entries, thousands(fo.entries/2), wholeStatus(fo))
}

// wholeStatus says so when the controller's status write of a set sent
// about the whole object.
func wholeStatus(fo setFanOut) string {
	if fo.setBytes > fo.setUser/2 {
		return " (the controller's writes sent more than half the set's size)"
	}
	return ""
}

func TestReadSetFanOut(t *testing.T) {
	path := t.TempDir() + "/fanout.log"
	log := "=== RUN   TestSetFanOut\nSETFANOUT nodes=1000 entries=100000 set_ms=1500 set_first_ms=700 set_update_ms=600 set_user_bytes=913000 set_controller_writes=1 set_controller_bytes=913100 set_node_writes=0 set_watch_bytes=1826000000 set_kinds=v1alpha1.NodeFirewallAddressSet/status-update=1:913100 join_ms=300 join_node_bytes=1200 join_controller_writes=5 join_controller_bytes=6800 join_nfw_updates=0 join_watch_bytes=2600000 join_kinds=v1alpha1.NodeFirewall/create=1:377,v1alpha1.NodeFirewallAddressSet/update=1:1301\n--- PASS\n"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readSetFanOut(path)
	if err != nil {
		t.Fatal(err)
	}
	want := setFanOut{nodes: 1000, entries: 100000, set: 1500 * time.Millisecond, setFirst: 700 * time.Millisecond, setUpdate: 600 * time.Millisecond, setUser: 913000, setWrites: 1, setBytes: 913100,
		setWatch: 1826000000, setKinds: "v1alpha1.NodeFirewallAddressSet/status-update=1:913100",
		join: 300 * time.Millisecond, joinNode: 1200, joinWrites: 5, joinBytes: 6800, joinWatch: 2600000,
		joinKinds: "v1alpha1.NodeFirewall/create=1:377,v1alpha1.NodeFirewallAddressSet/update=1:1301"}
	if got != want {
		t.Errorf("readSetFanOut = %+v, want %+v", got, want)
	}
	if k := kindsText(got.joinKinds); k != "NodeFirewall create × 1 (377 B); NodeFirewallAddressSet update × 1 (1,301 B)" {
		t.Errorf("kindsText = %q", k)
	}
	if err := os.WriteFile(path, []byte("--- FAIL: TestSetFanOut\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readSetFanOut(path); err == nil {
		t.Error("a log without the SETFANOUT line was accepted")
	}
}
