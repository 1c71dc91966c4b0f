package manifests

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
)

// TestHelmInstallsOnAFreshCluster installs the chart as `helm install`
// does into an API server that has none of nodefw's CRDs, then upgrades
// it: the CRDs of crds/ go in first, so the NodeFirewallConfig the chart
// writes can be built and created in the same install, and an upgrade
// with other values updates it in place.
func TestHelmInstallsOnAFreshCluster(t *testing.T) {
	if err := envtesting.CheckAssets(); err != nil {
		t.Fatal(err)
	}
	log.SetLogger(logr.Discard())
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := envtesting.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Get(ctx, client.ObjectKey{Name: fwv1.NodeFirewallConfigName}, &fwv1.NodeFirewallConfig{}); !meta.IsNoMatchError(err) {
		t.Fatalf("the API server already knows NodeFirewallConfig (%v); the test needs a fresh one", err)
	}

	helm := new(action.Configuration)
	getter := genericclioptions.NewConfigFlags(true)
	kubeconfig := writeKubeconfig(t, cfg)
	getter.KubeConfig = &kubeconfig
	if err := helm.Init(getter, "kube-system", "secret", t.Logf); err != nil {
		t.Fatal(err)
	}
	ch, err := loader.Load(filepath.Join(repoRoot, chartDir))
	if err != nil {
		t.Fatal(err)
	}
	install := action.NewInstall(helm)
	install.ReleaseName, install.Namespace, install.Timeout = "nodefw", "kube-system", time.Minute
	if _, err := install.Run(ch, map[string]any{}); err != nil {
		t.Fatalf("helm install: %v", err)
	}
	stored := &fwv1.NodeFirewallConfig{}
	if err := c.Get(ctx, client.ObjectKey{Name: fwv1.NodeFirewallConfigName}, stored); err != nil {
		t.Fatalf("the install wrote no NodeFirewallConfig: %v", err)
	}
	if r := stored.Spec.Agent.ResyncPeriod; r == nil || r.Duration != 10*time.Second || len(stored.Spec.Failsafes.Inbound) != 5 {
		t.Errorf("installed NodeFirewallConfig spec %+v, want the chart's defaults", stored.Spec)
	}

	upgrade := action.NewUpgrade(helm)
	upgrade.Namespace, upgrade.Timeout = "kube-system", time.Minute
	values := map[string]any{"config": map[string]any{"agent": map[string]any{"resyncPeriod": "20s"}}}
	if _, err := upgrade.Run("nodefw", ch, values); err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	upgraded := &fwv1.NodeFirewallConfig{}
	if err := c.Get(ctx, client.ObjectKey{Name: fwv1.NodeFirewallConfigName}, upgraded); err != nil {
		t.Fatal(err)
	}
	if r := upgraded.Spec.Agent.ResyncPeriod; r == nil || r.Duration != 20*time.Second || len(upgraded.Spec.Failsafes.Inbound) != 5 {
		t.Errorf("upgraded NodeFirewallConfig spec %+v, want resyncPeriod 20s and the default failsafes", upgraded.Spec)
	}
	if upgraded.UID != stored.UID {
		t.Error("the upgrade replaced the NodeFirewallConfig; it must update it in place, or agents fall back to their flags meanwhile")
	}
	if upgraded.Generation != stored.Generation+1 {
		t.Errorf("generation %d -> %d, want one update", stored.Generation, upgraded.Generation)
	}
}

// writeKubeconfig writes a kubeconfig for cfg, as the Helm CLI reads one.
func writeKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}
