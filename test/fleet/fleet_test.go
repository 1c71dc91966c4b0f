// Package fleet measures the controller, as the bin/manager process, on a
// large cluster in envtest with simulated agents: its full resolve and
// write pass, its peak RSS, and the time until a change that touches every
// node is Ready. `make bench` runs it at 5,000 nodes and 1,000 policies
// (NODEFW_FLEET_NODES, NODEFW_FLEET_POLICIES); `go test` at a small size,
// so that it keeps working.
package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/testbed"
)

var (
	cp         *testbed.ControlPlane
	managerBin string
	workDir    string
	// c writes the test's objects and the simulated agents' status,
	// without client-side throttling.
	c client.Client
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	workDir, err = os.MkdirTemp("", "nodefw-fleet-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(workDir)
	managerBin = filepath.Join(workDir, "manager")
	build := exec.Command("go", "build", "-o", managerBin, "./cmd/manager")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the manager: %v\n%s", err, out)
		return 1
	}
	cp, err = testbed.StartControlPlane(envtesting.CRDDir(filepath.Join("..", "..")), workDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cp.Stop()
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 5000, 10000
	if c, err = envtesting.NewClient(cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// size is the cluster's size: NODEFW_FLEET_NODES and
// NODEFW_FLEET_POLICIES, or a small one.
func size() (nodes, policies int) {
	nodes, policies = 100, 20
	if n, err := strconv.Atoi(os.Getenv("NODEFW_FLEET_NODES")); err == nil && n > 0 {
		nodes = n
	}
	if n, err := strconv.Atoi(os.Getenv("NODEFW_FLEET_POLICIES")); err == nil && n > 0 {
		policies = n
	}
	return nodes, policies
}

const (
	zones = 10
	pools = 20
	// nodesPerRack nodes share a rack label.
	nodesPerRack = 40
)

// fleetNode is node i: in a zone, a pool and a rack, a seventh of them
// with a GPU.
func fleetNode(i int) *corev1.Node {
	n := &corev1.Node{}
	n.Name = fmt.Sprintf("fleet-node-%05d", i)
	n.Labels = map[string]string{
		"kubernetes.io/hostname": n.Name,
		"fleet":                  "yes",
		"zone":                   fmt.Sprintf("z%d", i%zones),
		"pool":                   fmt.Sprintf("p%d", i%pools),
		"rack":                   fmt.Sprintf("r%d", i/nodesPerRack),
	}
	if i%7 == 0 {
		n.Labels["gpu"] = "true"
	}
	return n
}

// fleetPolicy is policy j of a cluster of `nodes` nodes, with 1 to 5
// rules of one port and one /32 each: policy 0 selects every node; the
// others a zone, a pool, two racks, three hosts, or the GPU nodes of a
// zone, in turn, spread over the zones, pools and racks.
func fleetPolicy(j, nodes int) *fwv1.NodeFirewallPolicy {
	p := &fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("fleet-%04d", j)}}
	p.Spec.Priority = ptr.To(int32(100 + j%50))
	racks := max(1, (nodes+nodesPerRack-1)/nodesPerRack)
	// k counts the policies of j's kind.
	k := j / 5
	sel := &p.Spec.NodeSelector
	switch {
	case j == 0:
		sel.MatchLabels = map[string]string{"fleet": "yes"}
	case j%5 == 0:
		sel.MatchLabels = map[string]string{"zone": fmt.Sprintf("z%d", k%zones)}
	case j%5 == 1:
		sel.MatchLabels = map[string]string{"pool": fmt.Sprintf("p%d", k%pools)}
	case j%5 == 2:
		sel.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "rack", Operator: metav1.LabelSelectorOpIn,
			Values: []string{fmt.Sprintf("r%d", (2*k)%racks), fmt.Sprintf("r%d", (2*k+1)%racks)}}}
	case j%5 == 3:
		var hosts []string
		for h := range 3 {
			hosts = append(hosts, fleetNode((k*3+h)*97%nodes).Name)
		}
		sel.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: metav1.LabelSelectorOpIn, Values: hosts}}
	default:
		sel.MatchLabels = map[string]string{"zone": fmt.Sprintf("z%d", k%zones)}
		sel.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "gpu", Operator: metav1.LabelSelectorOpExists}}
	}
	p.Spec.Rules = fleetRules(fmt.Sprintf("p%d", j), 1+j%5, int32(1000+j%1000))
	return p
}

func fleetRules(prefix string, n int, firstPort int32) []fwv1.Rule {
	rules := make([]fwv1.Rule, n)
	for i := range rules {
		port := firstPort + int32(i)
		rules[i] = fwv1.Rule{
			Name: fmt.Sprintf("%s-%d", prefix, i), Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP,
			Ports:   []fwv1.PortRange{{Port: port}},
			Sources: []string{fmt.Sprintf("10.%d.%d.%d/32", i, (port/256)%256, port%256)},
		}
	}
	return rules
}

// createAll creates the objects, 64 at a time.
func createAll(t *testing.T, objs []client.Object) {
	t.Helper()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	errs := make(chan error, len(objs))
	for _, o := range objs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := c.Create(context.Background(), o); err != nil {
				errs <- fmt.Errorf("creating %s: %w", o.GetName(), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// notReady counts the policies in r not Ready for their generation and
// names one. It reads the cache's own objects: copying 1,000 policies ten
// times a second cost this process more CPU than the agents it simulates.
func notReady(ctx context.Context, r client.Reader) (int, string, error) {
	var list fwv1.NodeFirewallPolicyList
	if err := r.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return 0, "", err
	}
	n, example := 0, ""
	for _, p := range list.Items {
		r := meta.FindStatusCondition(p.Status.Conditions, fwv1.ConditionReady)
		if r == nil || r.Status != metav1.ConditionTrue || r.ObservedGeneration != p.Generation {
			n++
			example = fmt.Sprintf("%s (applied on %d of %d)", p.Name, p.Status.AppliedNodes, p.Status.MatchedNodes)
		}
	}
	return n, example, nil
}

// pass is one resolve of the manager, from its debug log.
type pass struct {
	Policies int     `json:"policies"`
	Nodes    int     `json:"nodes"`
	Created  int     `json:"created"`
	Updated  int     `json:"updated"`
	Seconds  float64 `json:"seconds"`
	Phases   string  `json:"phases"`
}

// passes reads the resolves the manager logged.
func passes(t *testing.T, log string) []pass {
	t.Helper()
	f, err := os.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []pass
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		var line struct {
			Msg string `json:"msg"`
			pass
		}
		if json.Unmarshal(s.Bytes(), &line) == nil && line.Msg == "resolved" {
			out = append(out, line.pass)
		}
	}
	return out
}

// vmHWM is the peak resident set size of process pid, in KiB.
func vmHWM(pid int) (int, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// TestLargeCluster: the policies and nodes exist before the manager starts,
// so that its first pass resolves them all and creates every node's
// NodeFirewall; then one edit to the rules of the policy that selects
// every node, which every node follows: it writes the policy's revision
// and moves the current label, writes no NodeFirewall, and every agent
// reports the new generation applied. Simulated agents acknowledge.
func TestLargeCluster(t *testing.T) {
	nodes, policies := size()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	objs := make([]client.Object, 0, nodes+policies)
	for i := range nodes {
		objs = append(objs, fleetNode(i))
	}
	for j := range policies {
		objs = append(objs, fleetPolicy(j, nodes))
	}
	createAll(t, objs)
	agents := &envtesting.SimulatedAgents{Prefix: "fleet-node-", RevisionNamespace: testbed.ManagerNamespace}
	if err := agents.Start(ctx, cp.Config, c); err != nil {
		t.Fatal(err)
	}

	// The policies' statuses are read from a watch, as `kubectl wait`
	// does: listing 1,000 policies every 100 ms kept the API server busy
	// serving lists, a fifth of its CPU during the change, which the
	// cluster under test would not spend.
	watched, err := cache.New(cp.Config, cache.Options{Scheme: envtesting.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watched.GetInformer(ctx, &fwv1.NodeFirewallPolicy{}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = watched.Start(ctx) }()
	if !watched.WaitForCacheSync(ctx) {
		t.Fatal("the policies' watch did not sync")
	}

	start := time.Now()
	manager, err := testbed.StartProcess(workDir, "manager", managerBin, "--kubeconfig", cp.Kubeconfig,
		"--revision-namespace", testbed.ManagerNamespace, "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
		"--zap-log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		manager.Stop()
		if t.Failed() {
			t.Logf("manager log:\n%s", testbed.LogTail(manager, 40))
		}
	})
	timeout := 20 * time.Minute
	ready := func() {
		t.Helper()
		envtesting.Eventually(t, timeout, func() error {
			n, example, err := notReady(ctx, watched)
			if err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("%d policies not Ready, e.g. %s", n, example)
			}
			return nil
		})
	}
	ready()
	initial := time.Since(start)
	first := passes(t, manager.Log)

	// One edit to the rules of the policy that selects every node, which
	// every node follows.
	all := &fwv1.NodeFirewallPolicy{}
	if err := c.Get(ctx, client.ObjectKey{Name: fleetPolicy(0, nodes).Name}, all); err != nil {
		t.Fatal(err)
	}
	all.Spec.Rules = fleetRules("edit", 3, 2000)
	// Where the change's CPU goes: the manager, the API server, etcd, and
	// this process, whose simulated agents count and acknowledge every
	// NodeFirewall.
	counted := map[string]int{"manager": manager.Pid(), "apiserver": cp.APIServerPID(), "etcd": processID(t, "etcd", workDir), "test": os.Getpid()}
	cpuBefore := cpuSeconds(t, counted)
	requestsBefore := apiRequests(ctx, t)
	start = time.Now()
	if err := c.Update(ctx, all); err != nil {
		t.Fatal(err)
	}
	// The watch brings the edit first; until then the cache's copy reads
	// Ready for the last generation.
	envtesting.Eventually(t, time.Minute, func() error {
		seen := &fwv1.NodeFirewallPolicy{}
		if err := watched.Get(ctx, client.ObjectKeyFromObject(all), seen); err != nil {
			return err
		}
		if seen.Generation < all.Generation {
			return fmt.Errorf("the watch has generation %d of %s, not yet %d", seen.Generation, all.Name, all.Generation)
		}
		return nil
	})
	ready()
	change := time.Since(start)
	cpuAfter := cpuSeconds(t, counted)
	requestsAfter := apiRequests(ctx, t)
	var requests []string
	for k, n := range requestsAfter {
		if d := n - requestsBefore[k]; d >= 10 {
			requests = append(requests, fmt.Sprintf("%s=%.0f", k, d))
		}
	}
	slices.Sort(requests)
	t.Logf("fleet: API requests during the change (10 or more): %s", strings.Join(requests, " "))
	var cpuUsed []string
	for _, name := range []string{"manager", "apiserver", "etcd", "test"} {
		cpuUsed = append(cpuUsed, fmt.Sprintf("%s=%.1fs", name, cpuAfter[name]-cpuBefore[name]))
	}
	hwm, err := vmHWM(manager.Pid())
	if err != nil {
		t.Fatal(err)
	}
	logged := passes(t, manager.Log)

	// The pass that created every NodeFirewall, and the longest after
	// the edit, none of which writes a NodeFirewall: the nodes follow the
	// policy.
	var create, update pass
	for _, p := range first {
		if p.Created > create.Created {
			create = p
		}
	}
	for _, p := range logged[len(first):] {
		if p.Created+p.Updated > 0 {
			t.Errorf("a pass after the edit wrote NodeFirewalls: %+v", p)
		}
		if p.Seconds > update.Seconds {
			update = p
		}
	}
	if create.Created != nodes {
		t.Errorf("no pass created all %d NodeFirewalls: the largest created %d", nodes, create.Created)
	}
	var nfws fwv1.NodeFirewallList
	if err := c.List(ctx, &nfws); err != nil {
		t.Fatal(err)
	}
	refs := 0
	for _, nfw := range nfws.Items {
		refs += len(nfw.Spec.Policies)
	}
	t.Logf("fleet: %d nodes, %d policies (%d policy references on the nodes): all Ready %v after the manager started; first pass %+v",
		nodes, policies, refs, initial.Round(time.Millisecond), create)
	t.Logf("fleet: one edit touching every node: Ready after %v; its longest pass %+v; manager VmHWM %.1f MiB; CPU used meanwhile: %s",
		change.Round(time.Millisecond), update, float64(hwm)/1024, strings.Join(cpuUsed, " "))
	// `make bench` reads this line into its report.
	fmt.Printf("FLEET nodes=%d policies=%d refs=%d initial_ms=%d create_pass_ms=%d change_ready_ms=%d update_pass_ms=%d manager_hwm_kib=%d\n",
		nodes, policies, refs, initial.Milliseconds(), int64(create.Seconds*1000), change.Milliseconds(), int64(update.Seconds*1000), hwm)
}

// cpuSeconds is the CPU time (user and system) each named process has
// used so far.
func cpuSeconds(t *testing.T, pids map[string]int) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for name, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// The fields after the command, which may hold spaces, in parentheses.
		fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
		user, errU := strconv.ParseFloat(fields[11], 64)
		system, errS := strconv.ParseFloat(fields[12], 64)
		if errU != nil || errS != nil {
			t.Fatalf("/proc/%d/stat: %q", pid, raw)
		}
		// Clock ticks of the kernel's USER_HZ, 100 on Linux.
		out[name] = (user + system) / 100
	}
	return out
}

// processID is the process ID of the running program named name whose
// command line mentions arg.
func processID(t *testing.T, name, arg string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, errComm := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		cmdline, errCmd := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if errComm == nil && errCmd == nil && strings.TrimSpace(string(comm)) == name && strings.Contains(string(cmdline), arg) {
			return pid
		}
	}
	t.Fatalf("no %s running with %s", name, arg)
	return 0
}

// apiRequests are the API server's request counts (apiserver_request_total)
// by resource, verb and code, from its metrics.
func apiRequests(ctx context.Context, t *testing.T) map[string]float64 {
	t.Helper()
	cfg := rest.CopyConfig(cp.Config)
	cfg.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	rc, err := rest.UnversionedRESTClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rc.Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	label := func(line, name string) string {
		_, rest, ok := strings.Cut(line, name+`="`)
		if !ok {
			return ""
		}
		v, _, _ := strings.Cut(rest, `"`)
		return v
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		n, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			continue
		}
		key := label(line, "resource")
		if sub := label(line, "subresource"); sub != "" {
			key += "/" + sub
		}
		out[key+":"+label(line, "verb")+":"+label(line, "code")] += n
	}
	return out
}
