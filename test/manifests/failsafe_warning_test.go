package manifests

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/resolve"
)

// failsafeWarning is the name config/default gives the policy that warns
// about rules shadowed by failsafe ports.
const failsafeWarning = "nodefw-failsafe-warning"

func TestFailsafeWarningStatic(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	vap := into[admissionv1.ValidatingAdmissionPolicy](t, objs.get(t, "ValidatingAdmissionPolicy", "", failsafeWarning))
	vapb := into[admissionv1.ValidatingAdmissionPolicyBinding](t, objs.get(t, "ValidatingAdmissionPolicyBinding", "", failsafeWarning))

	if vapb.Spec.PolicyName != vap.Name {
		t.Errorf("binding names policy %q, want %q", vapb.Spec.PolicyName, vap.Name)
	}
	// Warn only: the policy never refuses a write.
	if !slices.Equal(vapb.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Warn}) {
		t.Errorf("binding validationActions %v, want [Warn]", vapb.Spec.ValidationActions)
	}
	if vap.Spec.FailurePolicy == nil || *vap.Spec.FailurePolicy != admissionv1.Ignore {
		t.Error("a warning must not block writes when it fails to evaluate: want failurePolicy Ignore")
	}
	mc := vap.Spec.MatchConstraints
	if mc == nil || len(mc.ResourceRules) != 1 {
		t.Fatalf("matchConstraints %+v: want one resource rule", mc)
	}
	rr := mc.ResourceRules[0]
	if !slices.Equal(rr.APIGroups, []string{fwGroup}) || !slices.Equal(rr.Resources, []string{"nodefirewallpolicies"}) ||
		!slices.Equal(rr.Operations, []admissionv1.OperationType{admissionv1.Create, admissionv1.Update}) {
		t.Errorf("resource rule %+v: want CREATE and UPDATE of nodefirewallpolicies", rr)
	}

	// The failsafe lists are the agent's defaults, in its flag syntax.
	want := map[string]string{
		"inboundFailsafes":  "'" + compile.FormatFailsafes(compile.DefaultFailsafeInbound()) + "'",
		"outboundFailsafes": "'" + compile.FormatFailsafes(compile.DefaultFailsafeOutbound()) + "'",
	}
	for _, v := range vap.Spec.Variables {
		if w, ok := want[v.Name]; ok {
			if v.Expression != w {
				t.Errorf("variable %s is %s, want the agent's default %s", v.Name, v.Expression, w)
			}
			delete(want, v.Name)
		}
	}
	for name := range want {
		t.Errorf("the policy has no variable %s", name)
	}
}

// TestChartFailsafeWarningFollowsValues: the chart's warning knows the
// failsafe ports the chart gives the agents.
func TestChartFailsafeWarningFollowsValues(t *testing.T) {
	objs := renderChart(t, map[string]any{"agent": map[string]any{"failsafeInbound": "tcp:22,tcp:2222", "failsafeOutbound": "none"}})
	vap := into[admissionv1.ValidatingAdmissionPolicy](t, objs.get(t, "ValidatingAdmissionPolicy", "", failsafeWarning))
	got := map[string]string{}
	for _, v := range vap.Spec.Variables {
		got[v.Name] = v.Expression
	}
	if got["inboundFailsafes"] != "'tcp:22,tcp:2222'" || got["outboundFailsafes"] != "'none'" {
		t.Errorf("failsafe variables %q and %q, want 'tcp:22,tcp:2222' and 'none'", got["inboundFailsafes"], got["outboundFailsafes"])
	}
}

// TestFailsafeWarningAdmission installs the failsafe warning in a real API
// server: a policy whose Drop rule covers a failsafe port is created with a
// warning naming the rule, a harmless one without, and the warning agrees
// with the controller's FailsafeShadowed check rule for rule.
func TestFailsafeWarningAdmission(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	cfg := startAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	admin, warned := adminClient(t, cfg)

	for _, kind := range []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		if err := admin.Create(ctx, objs.get(t, kind, "", failsafeWarning).DeepCopy()); err != nil {
			t.Fatalf("creating %s: %v", kind, err)
		}
	}

	// The expressions must compile against NodeFirewallPolicy's schema.
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	checker := &validating.TypeChecker{
		SchemaResolver: &resolver.ClientDiscoveryResolver{Discovery: dc},
		RestMapper:     admin.RESTMapper(),
	}
	vap := into[admissionv1.ValidatingAdmissionPolicy](t, objs.get(t, "ValidatingAdmissionPolicy", "", failsafeWarning))
	vap.Spec.MatchConstraints.ResourceRules[0].APIVersions = []string{fwv1.GroupVersion.Version}
	for _, w := range checker.Check(vap) {
		t.Errorf("policy type-check warning at %s: %s", w.FieldRef, w.Warning)
	}

	dropSSH := policy("drop-ssh", fwv1.Rule{Name: "no-ssh-from-anywhere", Chain: fwv1.ChainInput, Action: fwv1.ActionDrop,
		Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 22}}})
	harmless := policy("harmless", fwv1.Rule{Name: "no-telnet", Chain: fwv1.ChainInput, Action: fwv1.ActionDrop,
		Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 23}}})

	// A policy takes effect a moment after it is created: dry-run the
	// shadowing policy until it draws the warning.
	deadline := time.Now().Add(time.Minute)
	for {
		if err := admin.Create(ctx, dropSSH.DeepCopy(), client.DryRunAll); err != nil {
			t.Fatalf("dry-run create: %v", err)
		}
		if slices.ContainsFunc(warned.take(), func(w string) bool { return strings.Contains(w, failsafeWarning) }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the failsafe warning never took effect")
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The real thing: a warning naming the rule and the port; the policy
	// is stored all the same.
	if err := admin.Create(ctx, dropSSH.DeepCopy()); err != nil {
		t.Fatalf("creating %s: %v (a warning must not refuse it)", dropSSH.Name, err)
	}
	w := warned.take()
	if len(w) != 1 || !strings.Contains(w[0], "rule no-ssh-from-anywhere (Input Drop) covers tcp:22") {
		t.Errorf("creating %s: warnings %q, want one naming rule no-ssh-from-anywhere and tcp:22", dropSSH.Name, w)
	} else {
		t.Logf("warning: %s", w[0])
	}
	if err := admin.Create(ctx, harmless.DeepCopy()); err != nil {
		t.Fatalf("creating %s: %v", harmless.Name, err)
	}
	if w := warned.take(); len(w) != 0 {
		t.Errorf("creating %s: warnings %q, want none", harmless.Name, w)
	}
	for _, name := range []string{dropSSH.Name, harmless.Name} {
		if err := admin.Get(ctx, client.ObjectKey{Name: name}, &fwv1.NodeFirewallPolicy{}); err != nil {
			t.Errorf("policy %s was not stored: %v", name, err)
		}
	}

	// Updates are checked too: the harmless policy now rejects etcd.
	stored := &fwv1.NodeFirewallPolicy{}
	if err := admin.Get(ctx, client.ObjectKey{Name: harmless.Name}, stored); err != nil {
		t.Fatal(err)
	}
	stored.Spec.Rules = append(stored.Spec.Rules, fwv1.Rule{Name: "no-etcd", Chain: fwv1.ChainInput, Action: fwv1.ActionReject,
		Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 2000, EndPort: 2379}}})
	if err := admin.Update(ctx, stored); err != nil {
		t.Fatalf("updating %s: %v", harmless.Name, err)
	}
	if w := warned.take(); len(w) != 1 || !strings.Contains(w[0], "rule no-etcd (Input Reject) covers tcp:2379-2380") ||
		strings.Contains(w[0], "no-telnet") {
		t.Errorf("updating %s: warnings %q, want one naming rule no-etcd and tcp:2379-2380 only", harmless.Name, w)
	}

	// Rule for rule, the warning agrees with the controller's check.
	tcp, udp, sctp := fwv1.ProtocolTCP, fwv1.ProtocolUDP, fwv1.ProtocolSCTP
	ports := func(p ...int32) []fwv1.PortRange {
		var out []fwv1.PortRange
		for i := 0; i < len(p); i += 2 {
			out = append(out, fwv1.PortRange{Port: p[i], EndPort: p[i+1]})
		}
		return out
	}
	cases := []struct {
		chain  fwv1.Chain
		action fwv1.Action
		proto  fwv1.Protocol
		ports  []fwv1.PortRange
		// covers lists the failsafes named, or none.
		covers string
	}{
		{fwv1.ChainInput, fwv1.ActionDrop, "", nil, "tcp:22, tcp:6443, tcp:2379-2380, tcp:10250, udp:67-68"},
		{fwv1.ChainInput, fwv1.ActionDrop, tcp, nil, "tcp:22, tcp:6443, tcp:2379-2380, tcp:10250"},
		{fwv1.ChainInput, fwv1.ActionDrop, tcp, ports(22, 0), "tcp:22"},
		{fwv1.ChainInput, fwv1.ActionDrop, tcp, ports(21, 0, 23, 0), ""},
		{fwv1.ChainInput, fwv1.ActionDrop, tcp, ports(2380, 2381), "tcp:2379-2380"},
		{fwv1.ChainInput, fwv1.ActionDrop, tcp, ports(2381, 6442), ""},
		{fwv1.ChainInput, fwv1.ActionDrop, tcp, ports(8080, 0, 10250, 0), "tcp:10250"},
		{fwv1.ChainInput, fwv1.ActionReject, tcp, ports(1, 65535), "tcp:22, tcp:6443, tcp:2379-2380, tcp:10250"},
		{fwv1.ChainInput, fwv1.ActionDrop, udp, ports(22, 0), ""},
		{fwv1.ChainInput, fwv1.ActionDrop, udp, ports(60, 67), "udp:67-68"},
		{fwv1.ChainInput, fwv1.ActionDrop, sctp, ports(22, 0), ""},
		{fwv1.ChainInput, fwv1.ActionDrop, fwv1.ProtocolICMP, nil, ""},
		{fwv1.ChainInput, fwv1.ActionAccept, tcp, ports(22, 0), ""},
		{fwv1.ChainPreRouting, fwv1.ActionDrop, tcp, ports(30000, 32767), ""},
		{fwv1.ChainPreRouting, fwv1.ActionReject, tcp, ports(10000, 32767), "tcp:10250"},
		{fwv1.ChainPreRouting, fwv1.ActionDrop, "", nil, "tcp:22, tcp:6443, tcp:2379-2380, tcp:10250, udp:67-68"},
		{fwv1.ChainPreRouting, fwv1.ActionAccept, udp, ports(67, 0), ""},
		{fwv1.ChainForward, fwv1.ActionDrop, tcp, ports(22, 0), ""},
		{fwv1.ChainForward, fwv1.ActionDrop, "", nil, ""},
		{fwv1.ChainOutput, fwv1.ActionDrop, udp, ports(53, 0), "udp:53"},
		{fwv1.ChainOutput, fwv1.ActionReject, tcp, nil, "tcp:53, tcp:6443"},
		{fwv1.ChainOutput, fwv1.ActionDrop, tcp, ports(22, 0), ""},
		{fwv1.ChainOutput, fwv1.ActionDrop, "", nil, "udp:53, tcp:53, tcp:6443, udp:67-68"},
		{fwv1.ChainOutput, fwv1.ActionDrop, tcp, ports(6000, 7000), "tcp:6443"},
	}
	for i, c := range cases {
		name := fmt.Sprintf("case-%d", i)
		p := policy(name, fwv1.Rule{Name: "r" + name, Chain: c.chain, Action: c.action, Protocol: c.proto, Ports: c.ports})
		if c.chain == fwv1.ChainInput || c.chain == fwv1.ChainPreRouting {
			p.Spec.Rules[0].Sources = []string{"192.0.2.0/24"}
		}
		desc := fmt.Sprintf("%s %s %s %v", c.chain, c.action, c.proto, c.ports)
		if err := admin.Create(ctx, p, client.DryRunAll); err != nil {
			t.Fatalf("%s: dry-run create: %v", desc, err)
		}
		got := warned.take()
		controller := resolve.Resolve(resolve.Input{
			Policies:  []fwv1.NodeFirewallPolicy{*p},
			Failsafes: resolve.Failsafes{Inbound: compile.DefaultFailsafeInbound(), Outbound: compile.DefaultFailsafeOutbound()},
		}).Problems
		switch {
		case c.covers == "":
			if len(got) != 0 || len(controller) != 0 {
				t.Errorf("%s: warnings %q, controller %v; want neither", desc, got, controller)
			}
		default:
			want := fmt.Sprintf("rule r%s (%s %s) covers %s", name, c.chain, c.action, c.covers)
			if len(got) != 1 || !strings.HasSuffix(got[0], want) {
				t.Errorf("%s: warnings %q, want one ending %q", desc, got, want)
			}
			if len(controller) != 1 {
				t.Errorf("%s: the controller reports %v, the warning %q", desc, controller, got)
			}
		}
	}

	// Several rules: each named, in order, the harmless one left out.
	multi := policy("multi",
		fwv1.Rule{Name: "a-dns", Chain: fwv1.ChainOutput, Action: fwv1.ActionDrop, Protocol: udp, Ports: ports(53, 0)},
		fwv1.Rule{Name: "b-fine", Chain: fwv1.ChainInput, Action: fwv1.ActionDrop, Protocol: tcp, Ports: ports(8080, 0)},
		fwv1.Rule{Name: "c-dhcp", Chain: fwv1.ChainInput, Action: fwv1.ActionReject, Protocol: udp, Ports: ports(68, 0)},
	)
	if err := admin.Create(ctx, multi, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	want := "rule a-dns (Output Drop) covers udp:53; rule c-dhcp (Input Reject) covers udp:67-68"
	if got := warned.take(); len(got) != 1 || !strings.HasSuffix(got[0], want) {
		t.Errorf("several rules: warnings %q, want one ending %q", got, want)
	}
}

func policy(name string, rules ...fwv1.Rule) *fwv1.NodeFirewallPolicy {
	return &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       fwv1.NodeFirewallPolicySpec{NodeSelector: metav1.LabelSelector{}, Rules: rules},
	}
}
