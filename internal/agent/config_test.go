package agent

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/compile"
)

// countingConfirmer is always reachable and counts the checks.
type countingConfirmer struct {
	endpoint string
	checks   int
}

func (c *countingConfirmer) Reachable(context.Context) bool { c.checks++; return true }

// TestConfigAppliesWithoutRestart: the agent takes its failsafes, set
// lookups, resync period and confirm endpoint from the NodeFirewallConfig
// at every reconcile; a change is a new ruleset (confirmed, not counted as
// drift), a generation that fails the checks changes nothing, and without
// the object the flags apply again.
func TestConfigAppliesWithoutRestart(t *testing.T) {
	spec := fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{kubelet()}, DefaultActions: fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop}}
	r, fw, c := setup(t, spec)
	ctx := context.Background()
	flags := clusterconfig.Settings{
		FailsafeInbound: []compile.Failsafe{{Protocol: fwv1.ProtocolTCP, Ports: compile.PortInterval{First: 22, Last: 22}}},
		ResyncPeriod:    time.Second, ConfirmTimeout: time.Second, SetLookups: true,
	}
	r.Compile = compile.Options{Table: "nodefw", FailsafeInbound: flags.FailsafeInbound, SetLookups: true}
	r.ResyncPeriod, r.ConfirmTimeout = flags.ResyncPeriod, flags.ConfirmTimeout
	apiServer := &countingConfirmer{}
	confirmers := map[string]*countingConfirmer{}
	r.Confirm = apiServer
	r.ConfirmerFor = func(endpoint string) Confirmer {
		if confirmers[endpoint] == nil {
			confirmers[endpoint] = &countingConfirmer{endpoint: endpoint}
		}
		return confirmers[endpoint]
	}
	r.Config = clusterconfig.NewTracker(flags)

	// expect reconciles once and checks the table is spec compiled with
	// the given settings, and the requeue the resync period.
	expect := func(step string, s clusterconfig.Settings) {
		t.Helper()
		res, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKey{Name: node}})
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		want, err := compile.Compile(spec, compile.Options{Table: "nodefw", FailsafeInbound: s.FailsafeInbound, FailsafeOutbound: s.FailsafeOutbound, SetLookups: s.SetLookups})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, fw.table, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Errorf("%s: kernel table (-want +got):\n%s", step, diff)
		}
		if res.RequeueAfter != s.ResyncPeriod {
			t.Errorf("%s: requeue after %v, want the resync period %v", step, res.RequeueAfter, s.ResyncPeriod)
		}
	}

	expect("no NodeFirewallConfig: the flags", flags)
	if apiServer.checks != 2 {
		t.Errorf("the first apply checked the API server %d times, want twice (before and after)", apiServer.checks)
	}

	cfg := &fwv1.NodeFirewallConfig{
		ObjectMeta: metav1.ObjectMeta{Name: fwv1.NodeFirewallConfigName, Generation: 1},
		Spec: fwv1.NodeFirewallConfigSpec{
			Failsafes: fwv1.Failsafes{Inbound: []fwv1.Failsafe{{Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 2379, EndPort: 2380}}, Sources: []string{"10.0.0.0/24"}}}},
			Agent: fwv1.AgentSettings{ResyncPeriod: &metav1.Duration{Duration: 3 * time.Second}, ConfirmTimeout: &metav1.Duration{Duration: time.Second},
				ConfirmEndpoint: "10.0.0.10:6443", SetLookups: ptr.To(false)},
		},
	}
	if err := c.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	fromConfig, err := clusterconfig.For(&cfg.Spec)
	if err != nil {
		t.Fatal(err)
	}
	expect("the NodeFirewallConfig", fromConfig)
	if fw.applies != 2 || testutil.ToFloat64(r.Metrics.DriftRepairs) != 0 {
		t.Errorf("applies %d, drift repairs %v: want the config's ruleset applied as a change, not as drift", fw.applies, testutil.ToFloat64(r.Metrics.DriftRepairs))
	}
	if ep := confirmers["10.0.0.10:6443"]; ep == nil || ep.checks == 0 {
		t.Errorf("the config's confirm endpoint was not checked: %+v", confirmers)
	}

	// Malformed (the fake client does not validate): nothing changes.
	bad := cfg.DeepCopy()
	if err := c.Get(ctx, client.ObjectKeyFromObject(cfg), bad); err != nil {
		t.Fatal(err)
	}
	bad.Generation = 2
	bad.Spec.Failsafes.Inbound[0].Sources = []string{"10.0.0.300"}
	bad.Spec.Agent.SetLookups = ptr.To(true)
	if err := c.Update(ctx, bad); err != nil {
		t.Fatal(err)
	}
	expect("a generation that fails the checks: the last good one", fromConfig)
	if fw.applies != 2 {
		t.Errorf("applies %d after a refused generation, want 2", fw.applies)
	}

	// Gone: the flags again.
	if err := c.Delete(ctx, bad); err != nil {
		t.Fatal(err)
	}
	expect("no NodeFirewallConfig again: the flags", flags)
	if fw.applies != 3 {
		t.Errorf("applies %d, want 3", fw.applies)
	}
}

// TestConfigTimeoutZeroDisablesConfirm: confirmTimeout 0s turns the check
// off, whatever the flags say.
func TestConfigTimeoutZeroDisablesConfirm(t *testing.T) {
	r, fw, c := setup(t, fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{kubelet()}})
	apiServer := &countingConfirmer{}
	r.Confirm, r.ConfirmTimeout = apiServer, time.Second
	r.Config = clusterconfig.NewTracker(clusterconfig.Defaults())
	cfg := &fwv1.NodeFirewallConfig{ObjectMeta: metav1.ObjectMeta{Name: fwv1.NodeFirewallConfigName, Generation: 1}}
	cfg.Spec.Agent.ConfirmTimeout = &metav1.Duration{}
	if err := c.Create(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: node}}); err != nil {
		t.Fatal(err)
	}
	if fw.applies != 1 || apiServer.checks != 0 {
		t.Errorf("applies %d, confirm checks %d: want the ruleset applied unchecked", fw.applies, apiServer.checks)
	}
}
