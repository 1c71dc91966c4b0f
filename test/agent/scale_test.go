package agent

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/controllers"
	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/testbed"
)

// scalePolicyRules is how many rules each policy of the scale test has,
// within fwv1.MaxPolicyRules.
const scalePolicyRules = 500

// scaleProbePort is where the new-flow rate is measured: the last rule of
// the last policy accepts it from the test pair's client, so that a new
// flow meets every rule before it.
const scaleProbePort = 5001

// scalePolicies are policies of rules rules in all, each rule the smallest
// useful one: one TCP port from one /32 source; the last accepts
// scaleProbePort from the test pair's client.
func scalePolicies(rules int) []*fwv1.NodeFirewallPolicy {
	var out []*fwv1.NodeFirewallPolicy
	for first := 0; first < rules; first += scalePolicyRules {
		p := &fwv1.NodeFirewallPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-%03d", len(out))},
			Spec:       fwv1.NodeFirewallPolicySpec{NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"scale": "yes"}}},
		}
		for i := first; i < min(first+scalePolicyRules, rules); i++ {
			port, source := int32(1024+i%60000), fmt.Sprintf("10.%d.%d.%d/32", i>>16&255, i>>8&255, i&255)
			if i == rules-1 {
				port, source = scaleProbePort, netnstest.ClientV4.String()+"/32"
			}
			p.Spec.Rules = append(p.Spec.Rules, fwv1.Rule{
				Name: fmt.Sprintf("r-%05d", i), Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP,
				Ports: []fwv1.PortRange{{Port: port}}, Sources: []string{source},
			})
		}
		out = append(out, p)
	}
	return out
}

// startController runs the central controller in the test's process
// against the test's API server until the test ends, the policies' rules
// in revisions of testbed.ManagerNamespace.
func startController(t *testing.T) {
	t.Helper()
	if os.Getenv("NODEFW_SCALE_LOG") != "" {
		ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.Level(-1))))
	}
	// The manager's own --kube-api-qps and --kube-api-burst defaults.
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 200, 400
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 envtesting.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &controllers.NodeFirewallPolicyReconciler{
		Client:            mgr.GetClient(),
		Recorder:          mgr.GetEventRecorder("nodefw-controller"),
		WriteConcurrency:  8,
		Config:            clusterconfig.NewTracker(clusterconfig.Defaults()),
		RevisionNamespace: testbed.ManagerNamespace,
		APIReader:         mgr.GetAPIReader(),
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("controller: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// vmHWM is the peak resident set size of process pid, in KiB.
func vmHWM(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// createRetryingTimeouts creates p, again when the API server answers that
// the request timed out (a busy machine's API server, deep in validating
// large policies, may; the object may then exist already).
func createRetryingTimeouts(t *testing.T, p *fwv1.NodeFirewallPolicy) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		err := cp.Client.Create(context.Background(), p.DeepCopy())
		switch {
		case err == nil, attempt > 1 && apierrors.IsAlreadyExists(err):
			return
		case attempt < 5 && (apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err)):
			t.Logf("creating policy %s: %v; again", p.Name, err)
		default:
			t.Fatalf("creating policy %s: %v", p.Name, err)
		}
	}
}

// newFlowHost readies pair's host for the new-flow rate: a listener on
// scaleProbePort, and closed connections let go at once, so that conntrack
// never fills.
func newFlowHost(t *testing.T, pair *netnstest.Pair) {
	t.Helper()
	srv, err := pair.Host.ServeTCP(scaleProbePort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for _, k := range []string{"nf_conntrack_tcp_timeout_close", "nf_conntrack_tcp_timeout_time_wait"} {
		_ = pair.Host.Sysctl("net/netfilter/"+k, "1")
	}
}

// flowRateRatio is the median new-flow rate to scaleProbePort of the host
// with the rules over that of the host without any, measured in
// interleaved rounds (after a warm-up of each) so that load from elsewhere
// on the machine weighs on both alike.
func flowRateRatio(t *testing.T, withRules, without *netnstest.Pair) float64 {
	t.Helper()
	const workers, window, rounds = 4, 500 * time.Millisecond, 8
	var with, base []float64
	for round := -1; round < rounds; round++ {
		for _, m := range []struct {
			pair  *netnstest.Pair
			rates *[]float64
		}{{withRules, &with}, {without, &base}} {
			rate, err := m.pair.Client.ConnectRate(netnstest.HostV4, scaleProbePort, workers, window)
			if err != nil {
				t.Fatalf("new-flow rate: %v", err)
			}
			if round >= 0 {
				*m.rates = append(*m.rates, rate)
			}
		}
	}
	return median(with) / median(base)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestRulesThroughTheAPI applies 10,000 rules (NODEFW_SCALE_RULES to
// change it), in policies of 500, to one node end to end: policies created
// through the API server, resolved by the controller into revisions and a
// NodeFirewall naming them, fetched and applied by the agent binary. It
// reports the time from the first policy's creation to the node's status
// saying all of them are applied, the new-flow rate through the rules
// against a host without any, and the agent's peak RSS (VmHWM).
func TestRulesThroughTheAPI(t *testing.T) {
	rules := 10000
	if s := os.Getenv("NODEFW_SCALE_RULES"); s != "" {
		var err error
		if rules, err = strconv.Atoi(s); err != nil || rules < 1 {
			t.Fatalf("NODEFW_SCALE_RULES=%q: want a number of rules", s)
		}
	}
	ctx := context.Background()
	const node = "scale-node"
	pair, bare := netnstest.NewTestPair(t), netnstest.NewTestPair(t)
	newFlowHost(t, pair)
	newFlowHost(t, bare)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{"scale": "yes"}}}
	if err := cp.Client.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Client.Delete(context.Background(), n) })
	startController(t)
	agent := startAgent(t, node, pair.Host, "--revision-namespace", testbed.ManagerNamespace, "--resync-period", "10s")
	envtesting.Eventually(t, 30*time.Second, func() error {
		_, err := envtesting.GetNodeFirewall(cp.Client, node)
		return err
	})

	policies := scalePolicies(rules)
	start := time.Now()
	for _, p := range policies {
		createRetryingTimeouts(t, p)
		t.Cleanup(func() { _ = cp.Client.Delete(context.Background(), p) })
	}
	var nfw *fwv1.NodeFirewall
	envtesting.Eventually(t, 5*time.Minute, func() error {
		var err error
		if nfw, err = envtesting.GetNodeFirewall(cp.Client, node); err != nil {
			return err
		}
		if len(nfw.Spec.Policies) != len(policies) {
			return fmt.Errorf("the NodeFirewall lists %d of %d policies", len(nfw.Spec.Policies), len(policies))
		}
		c := meta.FindStatusCondition(nfw.Status.Conditions, fwv1.ConditionReady)
		if c == nil || c.ObservedGeneration != nfw.Generation || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready = %+v at generation %d", c, nfw.Generation)
		}
		return nil
	})
	elapsed := time.Since(start)
	if nfw.Status.RuleCount == 0 {
		t.Errorf("the agent reports no rules applied")
	}
	for _, ref := range nfw.Spec.Policies {
		if ref.Revision == "" && !ref.Follow {
			t.Errorf("policy %s names no revision and is not followed", ref.Name)
		}
	}
	if size := len(nfw.Spec.Rules); size != 0 {
		t.Errorf("the NodeFirewall copies %d rules", size)
	}
	hwm, err := vmHWM(agent.Pid())
	if err != nil {
		t.Fatal(err)
	}
	ratio := flowRateRatio(t, pair, bare)
	if os.Getenv("NODEFW_SCALE_LOG") != "" {
		t.Logf("agent log:\n%s", testbed.LogTail(agent, 200))
	}
	t.Logf("%d rules in %d policies applied through the API in %v; agent VmHWM %.1f MiB; new-flow rate %.2f of no rules",
		rules, len(policies), elapsed.Round(time.Millisecond), float64(hwm)/1024, ratio)
	// `make bench` reads this line into its report.
	fmt.Printf("SCALE rules=%d policies=%d ready_ms=%d agent_vmhwm_kib=%d flow_ratio=%.3f\n", rules, len(policies), elapsed.Milliseconds(), hwm, ratio)
}
