package manifests

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/clusterconfig"
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

	// The failsafes are the NodeFirewallConfig named default.
	if pk := vap.Spec.ParamKind; pk == nil || pk.APIVersion != fwv1.GroupVersion.String() || pk.Kind != "NodeFirewallConfig" {
		t.Errorf("paramKind %+v, want the NodeFirewallConfig of %s", pk, fwv1.GroupVersion)
	}
	pr := vapb.Spec.ParamRef
	if pr == nil || pr.Name != fwv1.NodeFirewallConfigName || pr.Namespace != "" || pr.Selector != nil ||
		pr.ParameterNotFoundAction == nil || *pr.ParameterNotFoundAction != admissionv1.AllowAction {
		t.Errorf("paramRef %+v, want the object named %s, and no warning without it", pr, fwv1.NodeFirewallConfigName)
	}
}

// TestDefaultConfig: config/default writes the NodeFirewallConfig named
// default, and its settings are the agents' and the controller's built-in
// defaults, the ones their flags start from.
func TestDefaultConfig(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	cfg := into[fwv1.NodeFirewallConfig](t, objs.get(t, "NodeFirewallConfig", "", fwv1.NodeFirewallConfigName))
	got, err := clusterconfig.For(&cfg.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(clusterconfig.Defaults(), got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Errorf("config/default's NodeFirewallConfig differs from the defaults (-defaults +object):\n%s", d)
	}
	if cfg.Spec.Failsafes.Inbound == nil || cfg.Spec.Failsafes.Outbound == nil || cfg.Spec.Agent.ResyncPeriod == nil ||
		cfg.Spec.Agent.ConfirmTimeout == nil || cfg.Spec.Agent.SetLookups == nil {
		t.Errorf("spec %+v: want every setting written out, not left to the CRD's defaults", cfg.Spec)
	}
}

// TestFailsafeWarningAdmission installs the failsafe warning and the
// NodeFirewallConfig it reads in a real API server: a policy whose Drop
// rule covers a failsafe port is created with a warning naming the rule, a
// harmless one without, the warning follows an edit of the
// NodeFirewallConfig, failsafes restricted to addresses included, and it
// agrees with the controller's FailsafeShadowed check, reading the same
// object, rule for rule.
func TestFailsafeWarningAdmission(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	cfg := startAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	admin, warned := adminClient(t, cfg)

	for _, k := range []objKey{{"ValidatingAdmissionPolicy", "", failsafeWarning}, {"ValidatingAdmissionPolicyBinding", "", failsafeWarning},
		{"NodeFirewallConfig", "", fwv1.NodeFirewallConfigName}} {
		if err := admin.Create(ctx, objs.get(t, k.Kind, k.Namespace, k.Name).DeepCopy()); err != nil {
			t.Fatalf("creating %s: %v", k, err)
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

	// Rule for rule, the warning agrees with the controller's check of
	// the same NodeFirewallConfig.
	controllerFailsafes := func() resolve.Failsafes {
		t.Helper()
		stored := &fwv1.NodeFirewallConfig{}
		if err := admin.Get(ctx, client.ObjectKey{Name: fwv1.NodeFirewallConfigName}, stored); err != nil {
			t.Fatal(err)
		}
		s, err := clusterconfig.For(&stored.Spec)
		if err != nil {
			t.Fatal(err)
		}
		return resolve.Failsafes{Inbound: s.FailsafeInbound, Outbound: s.FailsafeOutbound}
	}
	failsafes := controllerFailsafes()
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
		controller := resolve.Resolve(resolve.Input{Policies: []fwv1.NodeFirewallPolicy{*p}, Failsafes: failsafes}).Problems
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

	// The operators narrow failsafes to addresses; the warning follows the
	// object without anything restarted.
	config := &fwv1.NodeFirewallConfig{}
	if err := admin.Get(ctx, client.ObjectKey{Name: fwv1.NodeFirewallConfigName}, config); err != nil {
		t.Fatal(err)
	}
	config.Spec.Failsafes.Inbound = append(config.Spec.Failsafes.Inbound,
		fwv1.Failsafe{Protocol: tcp, Ports: ports(8443, 0, 9000, 9001), Sources: []string{"10.0.0.0/24", "2001:db8::/64"}},
		fwv1.Failsafe{Protocol: udp, Ports: ports(4789, 0), Destinations: []string{"192.0.2.10"}},
	)
	if err := admin.Update(ctx, config); err != nil {
		t.Fatal(err)
	}
	probe := policy("probe", fwv1.Rule{Name: "probe", Chain: fwv1.ChainInput, Action: fwv1.ActionDrop, Protocol: tcp, Ports: ports(8443, 0)})
	deadline = time.Now().Add(time.Minute)
	for {
		if err := admin.Create(ctx, probe.DeepCopy(), client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(warned.take(), func(w string) bool { return strings.Contains(w, "tcp:8443 from") }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the warning never saw the edited NodeFirewallConfig")
		}
		time.Sleep(200 * time.Millisecond)
	}
	failsafes = controllerFailsafes()
	byAddress := []struct {
		proto                 fwv1.Protocol
		ports                 []fwv1.PortRange
		sources, destinations []string
		covers                string
	}{
		{tcp, ports(8443, 0), []string{"10.0.0.5"}, nil, "tcp:8443 from 10.0.0.0/24,2001:db8::/64"},
		{tcp, ports(8000, 9000), []string{"10.0.0.0/16"}, nil, "tcp:8443 from 10.0.0.0/24,2001:db8::/64, tcp:9000-9001 from 10.0.0.0/24,2001:db8::/64"},
		{tcp, ports(8443, 0), []string{"10.1.0.0/16"}, nil, ""},
		{tcp, ports(8443, 0), []string{"2001:db8::1:2"}, nil, "tcp:8443 from 10.0.0.0/24,2001:db8::/64"},
		{tcp, ports(8443, 0), []string{"2001:db9::/32"}, nil, ""},
		{tcp, ports(8443, 0), nil, []string{"192.0.2.1"}, "tcp:8443 from 10.0.0.0/24,2001:db8::/64"},
		{udp, ports(4789, 0), nil, []string{"192.0.2.0/24"}, "udp:4789 to 192.0.2.10"},
		{udp, ports(4789, 0), nil, []string{"198.51.100.1"}, ""},
		{udp, ports(4789, 0), []string{"10.0.0.1"}, []string{"192.0.2.10/32"}, "udp:4789 to 192.0.2.10"},
		{udp, nil, []string{"10.0.0.0/8"}, []string{"192.0.2.10"}, "udp:67-68, udp:4789 to 192.0.2.10"},
		{"", nil, []string{"10.1.0.9"}, nil, "tcp:22, tcp:6443, tcp:2379-2380, tcp:10250, udp:67-68, udp:4789 to 192.0.2.10"},
	}
	for i, c := range byAddress {
		name := fmt.Sprintf("addr-%d", i)
		p := policy(name, fwv1.Rule{Name: "r" + name, Chain: fwv1.ChainInput, Action: fwv1.ActionDrop, Protocol: c.proto, Ports: c.ports,
			Sources: c.sources, Destinations: c.destinations})
		desc := fmt.Sprintf("%s %v from %v to %v", c.proto, c.ports, c.sources, c.destinations)
		if err := admin.Create(ctx, p, client.DryRunAll); err != nil {
			t.Fatalf("%s: dry-run create: %v", desc, err)
		}
		got := warned.take()
		controller := resolve.Resolve(resolve.Input{Policies: []fwv1.NodeFirewallPolicy{*p}, Failsafes: failsafes}).Problems
		if c.covers == "" {
			if len(got) != 0 || len(controller) != 0 {
				t.Errorf("%s: warnings %q, controller %v; want neither", desc, got, controller)
			}
			continue
		}
		want := fmt.Sprintf("rule r%s (Input Drop) covers %s", name, c.covers)
		if len(got) != 1 || !strings.HasSuffix(got[0], want) {
			t.Errorf("%s: warnings %q, want one ending %q", desc, got, want)
		}
		if len(controller) != 1 || !strings.Contains(controller[0].Message, c.covers) {
			t.Errorf("%s: the controller reports %v, want %q as the warning does", desc, controller, c.covers)
		}
	}

	// Peers restrict a rule to their addresses, which are not in the
	// policy: a rule on peers covers the failsafes that take every address
	// on that side, not those restricted to addresses.
	blocklist := []fwv1.Peer{{AddressSet: "blocklist", Except: []string{"10.0.0.0/24"}}}
	controlPlane := []fwv1.Peer{{NodeSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "node-role.kubernetes.io/control-plane", Operator: metav1.LabelSelectorOpExists}}}}}
	pods := []fwv1.Peer{{PodCIDRs: &metav1.LabelSelector{}}}
	byPeers := []struct {
		proto        fwv1.Protocol
		ports        []fwv1.PortRange
		from, to     []fwv1.Peer
		destinations []string
		covers       string
	}{
		{tcp, ports(22, 0), controlPlane, nil, nil, "tcp:22"},
		{tcp, ports(8443, 0), blocklist, nil, nil, ""},
		{tcp, ports(8443, 0), pods, nil, nil, ""},
		{tcp, ports(8000, 9000), controlPlane, nil, nil, ""},
		{udp, ports(4789, 0), nil, blocklist, nil, ""},
		{udp, ports(4789, 0), blocklist, nil, nil, "udp:4789 to 192.0.2.10"},
		{udp, ports(4789, 0), blocklist, nil, []string{"192.0.2.0/24"}, "udp:4789 to 192.0.2.10"},
		{udp, ports(4789, 0), blocklist, nil, []string{"198.51.100.1"}, ""},
		{"", nil, blocklist, nil, nil, "tcp:22, tcp:6443, tcp:2379-2380, tcp:10250, udp:67-68, udp:4789 to 192.0.2.10"},
		{"", nil, nil, controlPlane, nil, "tcp:22, tcp:6443, tcp:2379-2380, tcp:10250, udp:67-68, " +
			"tcp:8443 from 10.0.0.0/24,2001:db8::/64, tcp:9000-9001 from 10.0.0.0/24,2001:db8::/64"},
	}
	for i, c := range byPeers {
		name := fmt.Sprintf("peers-%d", i)
		p := policy(name, fwv1.Rule{Name: "r" + name, Chain: fwv1.ChainInput, Action: fwv1.ActionDrop, Protocol: c.proto, Ports: c.ports,
			From: c.from, To: c.to, Destinations: c.destinations})
		desc := fmt.Sprintf("%s %s %v, %d peers in from, %d in to, destinations %v", name, c.proto, c.ports, len(c.from), len(c.to), c.destinations)
		if err := admin.Create(ctx, p, client.DryRunAll); err != nil {
			t.Fatalf("%s: dry-run create: %v", desc, err)
		}
		got := warned.take()
		controller := resolve.Resolve(resolve.Input{Policies: []fwv1.NodeFirewallPolicy{*p}, Failsafes: failsafes}).Problems
		if c.covers == "" {
			if len(got) != 0 || len(controller) != 0 {
				t.Errorf("%s: warnings %q, controller %v; want neither", desc, got, controller)
			}
			continue
		}
		want := fmt.Sprintf("rule r%s (Input Drop) covers %s", name, c.covers)
		if len(got) != 1 || !strings.HasSuffix(got[0], want) {
			t.Errorf("%s: warnings %q, want one ending %q", desc, got, want)
		}
		if len(controller) != 1 || !strings.Contains(controller[0].Message, c.covers) {
			t.Errorf("%s: the controller reports %v, want %q as the warning does", desc, controller, c.covers)
		}
	}
}

func policy(name string, rules ...fwv1.Rule) *fwv1.NodeFirewallPolicy {
	return &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       fwv1.NodeFirewallPolicySpec{NodeSelector: metav1.LabelSelector{}, Rules: rules},
	}
}
