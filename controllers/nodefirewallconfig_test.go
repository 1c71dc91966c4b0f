package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
)

// getConfig reads the NodeFirewallConfig.
func getConfig() (*fwv1.NodeFirewallConfig, error) {
	cfg := &fwv1.NodeFirewallConfig{}
	return cfg, k8sClient.Get(context.Background(), client.ObjectKey{Name: fwv1.NodeFirewallConfigName}, cfg)
}

// shadowed reports the policy's FailsafeShadowed message, "" when it has
// none.
func shadowed(name string) (string, error) {
	p, err := getPolicy(name)
	if err != nil {
		return "", err
	}
	if c := condition(p, fwv1.ConditionFailsafeShadowed); c != nil && c.Status == metav1.ConditionTrue {
		return c.Message, nil
	}
	return "", nil
}

// TestConfigFailsafesReachPolicyStatus: the controller reports the rules
// that the NodeFirewallConfig's failsafes shadow, sources included, follows
// every change of the object without a restart, keeps the last good
// generation when one fails its checks (saying so in the object's status
// and in an Event), and goes back to its flags when the object is deleted.
func TestConfigFailsafesReachPolicyStatus(t *testing.T) {
	ctx := context.Background()
	newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t9-alt-ssh"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"t9": "none"}},
			Rules: []fwv1.Rule{{Name: "no-alt-ssh", Chain: fwv1.ChainInput, Action: fwv1.ActionDrop, Protocol: fwv1.ProtocolTCP,
				Ports: []fwv1.PortRange{{Port: 2222}}, Sources: []string{"192.0.2.0/24"}}},
		},
	})
	expectShadow := func(want string) {
		t.Helper()
		envtesting.Eventually(t, timeout, func() error {
			got, err := shadowed("t9-alt-ssh")
			if err != nil {
				return err
			}
			if (want == "") != (got == "") || !strings.Contains(got, want) {
				return fmt.Errorf("FailsafeShadowed %q, want one containing %q", got, want)
			}
			return nil
		})
	}
	expectConfig := func(status metav1.ConditionStatus, reason, message string) *fwv1.NodeFirewallConfig {
		t.Helper()
		var cfg *fwv1.NodeFirewallConfig
		envtesting.Eventually(t, timeout, func() error {
			var err error
			if cfg, err = getConfig(); err != nil {
				return err
			}
			c := meta.FindStatusCondition(cfg.Status.Conditions, fwv1.ConditionReady)
			if cfg.Status.ObservedGeneration != cfg.Generation || c == nil || c.Status != status || c.Reason != reason ||
				c.ObservedGeneration != cfg.Generation || !strings.Contains(c.Message, message) {
				return fmt.Errorf("status %+v, want observedGeneration %d and Ready %s %s containing %q", cfg.Status, cfg.Generation, status, reason, message)
			}
			stalled := meta.IsStatusConditionTrue(cfg.Status.Conditions, fwv1.ConditionStalled)
			if stalled != (status == metav1.ConditionFalse) {
				return fmt.Errorf("Stalled %v with Ready %s", stalled, status)
			}
			return nil
		})
		return cfg
	}

	// The flags' defaults do not cover tcp:2222.
	expectShadow("")

	// A failsafe for tcp:2222 from the rule's sources, and one from
	// elsewhere that it does not shadow.
	cfg := &fwv1.NodeFirewallConfig{
		ObjectMeta: metav1.ObjectMeta{Name: fwv1.NodeFirewallConfigName},
		Spec: fwv1.NodeFirewallConfigSpec{Failsafes: fwv1.Failsafes{Inbound: []fwv1.Failsafe{
			{Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 2222}}, Sources: []string{"192.0.2.128/25"}},
			{Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 2200, EndPort: 2300}}, Sources: []string{"198.51.100.0/24"}},
		}}},
	}
	if err := k8sClient.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8sClient.Delete(context.Background(), &fwv1.NodeFirewallConfig{ObjectMeta: metav1.ObjectMeta{Name: fwv1.NodeFirewallConfigName}})
	})
	expectShadow("would drop failsafe port(s) tcp:2222 from 192.0.2.128/25, which nodes accept before any rule")
	stored := expectConfig(metav1.ConditionTrue, fwv1.ReasonConfigValid, "2 inbound and 4 outbound")
	// The API server filled in the defaults the spec left out.
	if len(stored.Spec.Failsafes.Outbound) != 4 || stored.Spec.Agent.ResyncPeriod == nil || stored.Spec.Agent.SetLookups == nil {
		t.Errorf("stored spec %+v: want the outbound failsafes and agent settings defaulted", stored.Spec)
	}

	// An edit reaches the status without a restart, and another.
	stored.Spec.Failsafes.Inbound = stored.Spec.Failsafes.Inbound[1:]
	if err := k8sClient.Update(ctx, stored); err != nil {
		t.Fatal(err)
	}
	expectShadow("")
	stored = expectConfig(metav1.ConditionTrue, fwv1.ReasonConfigValid, "1 inbound")
	stored.Spec.Failsafes.Inbound = []fwv1.Failsafe{{Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 2222}}, Sources: []string{"192.0.2.3"}}}
	if err := k8sClient.Update(ctx, stored); err != nil {
		t.Fatal(err)
	}
	expectShadow("tcp:2222 from 192.0.2.3,")
	good := expectConfig(metav1.ConditionTrue, fwv1.ReasonConfigValid, "1 inbound")

	// A generation that fails the checks, as an object stored before a
	// validation existed would: the last good generation stays in force,
	// not the flags.
	restore := relaxSourcesValidation(t)
	bad := good.DeepCopy()
	bad.Spec.Failsafes.Inbound[0].Sources = []string{"192.0.2.300"}
	if err := k8sClient.Update(ctx, bad); err != nil {
		t.Fatalf("storing a malformed config with the validation relaxed: %v", err)
	}
	restore()
	expectConfig(metav1.ConditionFalse, fwv1.ReasonInvalidConfig,
		fmt.Sprintf(`keeping generation %d: spec.failsafes.inbound[0].sources[0]: "192.0.2.300" is not an IP address or CIDR`, good.Generation))
	expectEvent(t, fwv1.NodeFirewallConfigName, corev1.EventTypeWarning, fwv1.ReasonInvalidConfig)
	expectShadow("tcp:2222 from 192.0.2.3,")

	// Fixed: it takes over.
	fixed, err := getConfig()
	if err != nil {
		t.Fatal(err)
	}
	fixed.Spec.Failsafes.Inbound[0].Sources = []string{"192.0.2.0/26"}
	if err := k8sClient.Update(ctx, fixed); err != nil {
		t.Fatal(err)
	}
	expectConfig(metav1.ConditionTrue, fwv1.ReasonConfigValid, "1 inbound")
	expectShadow("tcp:2222 from 192.0.2.0/26,")

	// Deleted: the manager's flags again, which do not cover tcp:2222.
	if err := k8sClient.Delete(ctx, fixed); err != nil {
		t.Fatal(err)
	}
	expectShadow("")
}

const configCRD = "nodefirewallconfigs.firewall.nodefw.io"

// crdClient reaches the suite's API server with the CRD types.
func crdClient(t *testing.T) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	c, err := client.New(restConfig, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// relaxSourcesValidation drops the CRD's check that failsafe sources are
// addresses, as a CRD of before that check would have been, until the
// function it returns or the end of the test puts it back.
func relaxSourcesValidation(t *testing.T) (restore func()) {
	t.Helper()
	ctx := context.Background()
	crds := crdClient(t)
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := crds.Get(ctx, client.ObjectKey{Name: configCRD}, crd); err != nil {
		t.Fatal(err)
	}
	original := crd.DeepCopy()
	restore = func() { putCRD(t, original) }
	t.Cleanup(restore)
	schema := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	spec := schema.Properties["spec"]
	failsafes := spec.Properties["failsafes"]
	inbound := failsafes.Properties["inbound"]
	item := *inbound.Items.Schema
	sources := item.Properties["sources"]
	sources.XValidations = nil
	item.Properties["sources"] = sources
	inbound.Items.Schema = &item
	failsafes.Properties["inbound"] = inbound
	spec.Properties["failsafes"] = failsafes
	schema.Properties["spec"] = spec
	if err := crds.Update(ctx, crd); err != nil {
		t.Fatal(err)
	}
	// The API server takes a moment to serve the new schema: dry-run until
	// a malformed source passes.
	envtesting.Eventually(t, timeout, func() error {
		cur, err := getConfig()
		if err != nil {
			return err
		}
		cur.Spec.Failsafes.Inbound = []fwv1.Failsafe{{Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 1}}, Sources: []string{"not-an-address"}}}
		return k8sClient.Update(ctx, cur, client.DryRunAll)
	})
	return restore
}

// putCRD makes the CRD's spec want's again.
func putCRD(t *testing.T, want *apiextensionsv1.CustomResourceDefinition) {
	t.Helper()
	crds := crdClient(t)
	envtesting.Eventually(t, timeout, func() error {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := crds.Get(context.Background(), client.ObjectKey{Name: want.Name}, crd); err != nil {
			return err
		}
		crd.Spec = want.Spec
		return crds.Update(context.Background(), crd)
	})
}
