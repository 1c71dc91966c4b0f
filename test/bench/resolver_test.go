package bench

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/resolve"
)

// cluster builds nodes with the labels real clusters carry and policies
// with a mix of selectors: every node, a zone, a pool, racks, hosts, and
// matchExpressions with In, NotIn, Exists and DoesNotExist.
func cluster(nodes, policies int) ([]fwv1.NodeFirewallPolicy, []corev1.Node) {
	r := rand.New(rand.NewPCG(42, 1))
	ns := make([]corev1.Node, nodes)
	for i := range ns {
		labels := map[string]string{
			"kubernetes.io/hostname":      fmt.Sprintf("node-%d", i),
			"kubernetes.io/arch":          []string{"amd64", "arm64"}[i%2],
			"topology.kubernetes.io/zone": fmt.Sprintf("zone-%d", i%10),
			"node.kubernetes.io/pool":     fmt.Sprintf("pool-%d", i%50),
			"example.com/rack":            fmt.Sprintf("rack-%d", i%200),
			"node.kubernetes.io/instance": "m5.large",
		}
		if i < 3 {
			labels["node-role.kubernetes.io/control-plane"] = ""
		}
		if i%17 == 0 {
			labels["example.com/gpu"] = "true"
		}
		ns[i] = corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", i), Labels: labels}}
	}
	ps := make([]fwv1.NodeFirewallPolicy, policies)
	for i := range ps {
		var sel metav1.LabelSelector
		switch k := i % 20; {
		case k == 0 && i < 100:
			// A few policies for every node.
		case k < 3:
			sel.MatchLabels = map[string]string{"topology.kubernetes.io/zone": fmt.Sprintf("zone-%d", r.IntN(10))}
		case k < 9:
			sel.MatchLabels = map[string]string{"node.kubernetes.io/pool": fmt.Sprintf("pool-%d", r.IntN(50)), "kubernetes.io/arch": "amd64"}
		case k < 13:
			sel.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "example.com/rack", Operator: metav1.LabelSelectorOpIn,
				Values: []string{fmt.Sprintf("rack-%d", r.IntN(200)), fmt.Sprintf("rack-%d", r.IntN(200))}}}
		case k < 16:
			sel.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: metav1.LabelSelectorOpIn,
				Values: []string{fmt.Sprintf("node-%d", r.IntN(nodes)), fmt.Sprintf("node-%d", r.IntN(nodes)), fmt.Sprintf("node-%d", r.IntN(nodes))}}}
		case k < 18:
			sel.MatchExpressions = []metav1.LabelSelectorRequirement{
				{Key: "example.com/gpu", Operator: metav1.LabelSelectorOpExists},
				{Key: "topology.kubernetes.io/zone", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"zone-1", "zone-2"}},
			}
		default:
			sel.MatchExpressions = []metav1.LabelSelectorRequirement{
				{Key: "node-role.kubernetes.io/control-plane", Operator: metav1.LabelSelectorOpDoesNotExist},
				{Key: "node.kubernetes.io/pool", Operator: metav1.LabelSelectorOpIn, Values: []string{fmt.Sprintf("pool-%d", r.IntN(50))}},
			}
		}
		p := fwv1.NodeFirewallPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("policy-%04d", i), Generation: 1},
			Spec:       fwv1.NodeFirewallPolicySpec{NodeSelector: sel, Priority: ptr.To(int32(r.IntN(2000)))},
		}
		for j := range 1 + r.IntN(5) {
			p.Spec.Rules = append(p.Spec.Rules, fwv1.Rule{
				Name: fmt.Sprintf("rule-%d", j), Chain: fwv1.ChainInput, Action: fwv1.ActionAccept,
				Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: int32(1024 + r.IntN(60000))}},
				Sources: []string{fmt.Sprintf("10.%d.%d.0/24", r.IntN(256), r.IntN(256))},
			})
		}
		ps[i] = p
	}
	return ps, ns
}

// benchResolver times resolve.Resolve over the whole cluster on one core.
func benchResolver(t *testing.T, r *report) {
	policies, nodes := cluster(r.cfg.nodes, r.cfg.policies)
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	var times []time.Duration
	var allocs []float64
	rules := 0
	for range r.cfg.reps {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		res := resolve.Resolve(resolve.Input{Policies: policies, Nodes: nodes})
		took := time.Since(start)
		runtime.ReadMemStats(&after)
		times = append(times, took)
		allocs = append(allocs, float64(after.TotalAlloc-before.TotalAlloc))
		rules = 0
		for _, s := range res.Nodes {
			rules += len(s.Rules)
		}
	}
	d, b := median(times), median(allocs)
	n := float64(len(nodes))
	t.Logf("%d nodes × %d policies: %v, %.0f B/node, %d rules in all", len(nodes), len(policies), d, b/n, rules)
	r.add(row{
		figure: fmt.Sprintf("resolve %s nodes × %s policies, one core", thousands(len(nodes)), thousands(len(policies))),
		ours:   ms(d), peer: "—", ratio: "—", goal: "≤ 2 s", result: verdict(d <= 2*time.Second),
	})
	r.add(row{
		figure: "resolver, per node",
		ours:   fmt.Sprintf("%.0f µs, %.0f KiB allocated", float64(d.Nanoseconds())/n/1000, b/n/1024),
		peer:   "—", ratio: "—", goal: "—", result: "—",
	})
	r.note("Resolver: resolve.Resolve with GOMAXPROCS=1; nodes carry hostname, arch, zone, pool, rack and some a GPU "+
		"or control-plane label; policies select every node, a zone, a pool and arch, racks (In), hosts (In), GPUs "+
		"outside two zones (Exists, NotIn), or a pool without control planes (DoesNotExist, In), with 1-5 rules each: "+
		"%s rules land on the nodes in all.", thousands(rules))
}
