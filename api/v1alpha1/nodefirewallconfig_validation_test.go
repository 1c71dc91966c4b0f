package v1alpha1_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/compile"
)

// rawConfig is a valid NodeFirewallConfig in JSON form.
func rawConfig() map[string]any {
	return map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "NodeFirewallConfig",
		"metadata":   map[string]any{"name": v1alpha1.NodeFirewallConfigName},
		"spec": map[string]any{
			"failsafes": map[string]any{
				"inbound": []any{map[string]any{"protocol": "TCP", "ports": []any{map[string]any{"port": int64(22)}}, "sources": []any{"10.0.0.0/8"}}},
			},
			"agent": map[string]any{},
		},
	}
}

func rawFailsafe(obj map[string]any) map[string]any {
	return rawSpec(obj)["failsafes"].(map[string]any)["inbound"].([]any)[0].(map[string]any)
}

func rawAgent(obj map[string]any) map[string]any {
	return rawSpec(obj)["agent"].(map[string]any)
}

func TestNodeFirewallConfigRejectsInvalid(t *testing.T) {
	addrs := func(n int) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = "10.0.0." + string(rune('0'+i%10))
		}
		return out
	}
	cases := []struct {
		name  string
		edit  func(obj map[string]any)
		field string // "" when the error names the object
		msg   string
	}{
		{"another name", func(o map[string]any) { o["metadata"].(map[string]any)["name"] = "other" }, "", "there is one NodeFirewallConfig and it is named default"},
		{"ICMP", func(o map[string]any) { rawFailsafe(o)["protocol"] = "ICMP" }, "spec.failsafes.inbound[0].protocol", "protocol must be TCP, UDP or SCTP"},
		{"no such protocol", func(o map[string]any) { rawFailsafe(o)["protocol"] = "GRE" }, "spec.failsafes.inbound[0].protocol", "protocol must be TCP, UDP or SCTP"},
		{"no protocol", func(o map[string]any) { delete(rawFailsafe(o), "protocol") }, "spec.failsafes.inbound[0].protocol", "Required value"},
		{"no ports", func(o map[string]any) { delete(rawFailsafe(o), "ports") }, "spec.failsafes.inbound[0].ports", "Required value"},
		{"empty ports", func(o map[string]any) { rawFailsafe(o)["ports"] = []any{} }, "spec.failsafes.inbound[0].ports", "at least 1 items"},
		{"port 0", func(o map[string]any) { rawFailsafe(o)["ports"] = []any{map[string]any{"port": int64(0)}} }, "spec.failsafes.inbound[0].ports[0].port", "greater than or equal to 1"},
		{"range backwards", func(o map[string]any) {
			rawFailsafe(o)["ports"] = []any{map[string]any{"port": int64(10), "endPort": int64(5)}}
		}, "spec.failsafes.inbound[0].ports[0].endPort", "endPort must not be below port"},
		{"a source that is no address", func(o map[string]any) { rawFailsafe(o)["sources"] = []any{"10.0.0.300"} }, "spec.failsafes.inbound[0].sources", "sources must be IP addresses or CIDRs"},
		{"a destination that is a name", func(o map[string]any) { rawFailsafe(o)["destinations"] = []any{"node.example"} }, "spec.failsafes.inbound[0].destinations", "destinations must be IP addresses or CIDRs"},
		{"an IPv4-mapped IPv6 source", func(o map[string]any) { rawFailsafe(o)["sources"] = []any{"::ffff:10.0.0.1"} }, "spec.failsafes.inbound[0].sources", "sources must be IP addresses or CIDRs"},
		{"no family in common", func(o map[string]any) {
			rawFailsafe(o)["sources"] = []any{"10.0.0.0/8"}
			rawFailsafe(o)["destinations"] = []any{"2001:db8::/32"}
		}, "spec.failsafes.inbound[0]", "must have an IP family in common"},
		{"too many sources", func(o map[string]any) { rawFailsafe(o)["sources"] = addrs(17) }, "spec.failsafes.inbound[0].sources", "must have at most 16 items"},
		{"resync too fast", func(o map[string]any) { rawAgent(o)["resyncPeriod"] = "500ms" }, "spec.agent.resyncPeriod", "resyncPeriod must be between 1s and 1h"},
		{"resync too slow", func(o map[string]any) { rawAgent(o)["resyncPeriod"] = "2h" }, "spec.agent.resyncPeriod", "resyncPeriod must be between 1s and 1h"},
		{"resync not a duration", func(o map[string]any) { rawAgent(o)["resyncPeriod"] = "ten seconds" }, "spec.agent.resyncPeriod", "should match"},
		{"confirm timeout too long", func(o map[string]any) { rawAgent(o)["confirmTimeout"] = "6m" }, "spec.agent.confirmTimeout", "confirmTimeout must be between 0s and 5m"},
		{"confirm timeout negative", func(o map[string]any) { rawAgent(o)["confirmTimeout"] = "-1s" }, "spec.agent.confirmTimeout", "should match"},
		{"confirm endpoint without a port", func(o map[string]any) { rawAgent(o)["confirmEndpoint"] = "apiserver" }, "spec.agent.confirmEndpoint", "should match"},
		{"set lookups not a boolean", func(o map[string]any) { rawAgent(o)["setLookups"] = "yes" }, "spec.agent.setLookups", "must be of type boolean"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := rawConfig()
			tc.edit(obj)
			err := k8sClient.Create(context.Background(), &unstructured.Unstructured{Object: obj}, client.DryRunAll)
			if tc.field == "" {
				if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("got %v; want an Invalid error saying %q", err, tc.msg)
				}
				return
			}
			wantInvalid(t, err, tc.field, tc.msg)
		})
	}
}

// TestNodeFirewallConfigDefaults: what a spec leaves out, the API server
// fills in with the settings the controller and the agents have built in
// (their flags' defaults), so that an object that sets nothing changes
// nothing; an empty list, sent by a typed client too, means none.
func TestNodeFirewallConfigDefaults(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		obj  client.Object
		want func(s *clusterconfig.Settings)
	}{
		{"no spec", &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": v1alpha1.GroupVersion.String(), "kind": "NodeFirewallConfig",
			"metadata": map[string]any{"name": v1alpha1.NodeFirewallConfigName},
		}}, func(*clusterconfig.Settings) {}},
		{"an empty spec", &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": v1alpha1.GroupVersion.String(), "kind": "NodeFirewallConfig",
			"metadata": map[string]any{"name": v1alpha1.NodeFirewallConfigName}, "spec": map[string]any{},
		}}, func(*clusterconfig.Settings) {}},
		{"a typed client's zero spec", &v1alpha1.NodeFirewallConfig{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.NodeFirewallConfigName}},
			func(*clusterconfig.Settings) {}},
		{"a typed client's empty inbound list: none", &v1alpha1.NodeFirewallConfig{
			ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.NodeFirewallConfigName},
			Spec:       v1alpha1.NodeFirewallConfigSpec{Failsafes: v1alpha1.Failsafes{Inbound: []v1alpha1.Failsafe{}}},
		}, func(s *clusterconfig.Settings) { s.FailsafeInbound = []compile.Failsafe{} }},
		{"every setting", &v1alpha1.NodeFirewallConfig{
			ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.NodeFirewallConfigName},
			Spec: v1alpha1.NodeFirewallConfigSpec{
				Failsafes: v1alpha1.Failsafes{Outbound: []v1alpha1.Failsafe{{Protocol: v1alpha1.ProtocolSCTP, Ports: []v1alpha1.PortRange{{Port: 9, EndPort: 10}},
					Sources: []string{"10.0.0.1/24", "2001:db8::1"}, Destinations: []string{"2001:db8:1::/48"}}}},
				Agent: v1alpha1.AgentSettings{ResyncPeriod: &metav1.Duration{Duration: time.Hour}, ConfirmTimeout: &metav1.Duration{},
					ConfirmEndpoint: "[2001:db8::1]:6443", SetLookups: new(bool)},
			},
		}, func(s *clusterconfig.Settings) {
			s.FailsafeOutbound = []compile.Failsafe{{Protocol: v1alpha1.ProtocolSCTP, Ports: compile.PortInterval{First: 9, Last: 10},
				Sources:      []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("2001:db8::1/128")},
				Destinations: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/48")}}}
			s.ResyncPeriod, s.ConfirmTimeout, s.ConfirmEndpoint, s.SetLookups = time.Hour, 0, "[2001:db8::1]:6443", false
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cleanup(t, tc.obj)
			if err := k8sClient.Create(ctx, tc.obj); err != nil {
				t.Fatalf("create: %v", err)
			}
			stored := &v1alpha1.NodeFirewallConfig{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: v1alpha1.NodeFirewallConfigName}, stored); err != nil {
				t.Fatal(err)
			}
			got, err := clusterconfig.For(&stored.Spec)
			if err != nil {
				t.Fatalf("the stored spec fails the controller's checks: %v", err)
			}
			want := clusterconfig.Defaults()
			tc.want(&want)
			if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
				t.Errorf("settings (-want +got):\n%s", d)
			}
			// The defaults are written into the object, not left to readers.
			if stored.Spec.Failsafes.Inbound == nil || stored.Spec.Failsafes.Outbound == nil || stored.Spec.Agent.ResyncPeriod == nil ||
				stored.Spec.Agent.ConfirmTimeout == nil || stored.Spec.Agent.SetLookups == nil {
				t.Errorf("stored spec %+v: want every setting filled in", stored.Spec)
			}
			if err := k8sClient.Delete(ctx, stored); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNodeFirewallConfigStatus(t *testing.T) {
	ctx := context.Background()
	cfg := &v1alpha1.NodeFirewallConfig{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.NodeFirewallConfigName}}
	cleanup(t, cfg)
	if err := k8sClient.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Status = v1alpha1.NodeFirewallConfigStatus{
		ObservedGeneration: cfg.Generation,
		Conditions: []metav1.Condition{{
			Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, ObservedGeneration: cfg.Generation,
			LastTransitionTime: metav1.NewTime(time.Now().Truncate(time.Second)), Reason: v1alpha1.ReasonInvalidConfig, Message: "keeping generation 1",
		}},
	}
	want := cfg.Status
	if err := k8sClient.Status().Update(ctx, cfg); err != nil {
		t.Fatalf("status update: %v", err)
	}
	got := &v1alpha1.NodeFirewallConfig{}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(cfg), got); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got.Status); d != "" {
		t.Errorf("status (-want +got):\n%s", d)
	}
	if got.Generation != cfg.Generation {
		t.Errorf("a status write moved the generation %d -> %d", cfg.Generation, got.Generation)
	}
}
