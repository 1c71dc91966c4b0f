package manifests

import (
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/compile"
)

const (
	chartDir = "charts/nodefw"
	syncHint = "run hack/sync-chart.sh after changing config/ (CRDs, generated roles, admission policy)"
)

// renderChart renders the chart as `helm template` does, with the given
// values over the chart's defaults.
func renderChart(t *testing.T, values map[string]any) objects {
	t.Helper()
	ch, err := loader.Load(filepath.Join(repoRoot, chartDir))
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	if values == nil {
		values = map[string]any{}
	}
	opts := chartutil.ReleaseOptions{Name: "nodefw", Namespace: "kube-system", Revision: 1, IsInstall: true}
	vals, err := chartutil.ToRenderValues(ch, values, opts, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatalf("chart values: %v", err)
	}
	files, err := engine.Engine{Strict: true}.Render(ch, vals)
	if err != nil {
		t.Fatalf("rendering the chart: %v", err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	// What `helm install` creates: the CRDs of crds/ first, then the
	// templates.
	var list []*unstructured.Unstructured
	for _, crd := range ch.CRDObjects() {
		objs, err := parseObjects(crd.File.Data)
		if err != nil {
			t.Fatalf("%s does not parse: %v", crd.Filename, err)
		}
		list = append(list, objs...)
	}
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue // NOTES.txt, helpers
		}
		objs, err := parseObjects([]byte(files[name]))
		if err != nil {
			t.Fatalf("%s does not render to YAML: %v\n%s", name, err, files[name])
		}
		list = append(list, objs...)
	}
	objs, err := index(list)
	if err != nil {
		t.Fatalf("chart: %v", err)
	}
	return objs
}

// comparable strips what may differ between the two installs: labels
// (Helm adds its own).
func comparable(u *unstructured.Unstructured) map[string]any {
	c := u.DeepCopy()
	c.SetLabels(nil)
	unstructured.RemoveNestedField(c.Object, "spec", "template", "metadata", "labels")
	return c.Object
}

// TestChartMatchesKustomize keeps the two installs from drifting: with its
// default values the chart renders the same objects as config/default,
// field by field, labels aside.
func TestChartMatchesKustomize(t *testing.T) {
	kust := buildKustomize(t, "config/default")
	chart := renderChart(t, nil)

	if d := diff(kust.keys(), chart.keys()); d != "" {
		t.Fatalf("the chart and config/default install different objects (-kustomize +chart):\n%s\n%s", d, syncHint)
	}
	for _, k := range kust.keys() {
		if d := diff(comparable(kust[k]), comparable(chart[k])); d != "" {
			t.Errorf("%s differs (-kustomize +chart):\n%s", k, d)
		}
	}
	if t.Failed() {
		t.Log(syncHint)
	}

	// What the comparison above strips must hold on its own.
	for _, ns := range []string{managerNamespace, agentNamespace} {
		want := kust[objKey{"Namespace", "", ns}].GetLabels()["pod-security.kubernetes.io/enforce"]
		if got := chart[objKey{"Namespace", "", ns}].GetLabels()["pod-security.kubernetes.io/enforce"]; got != want {
			t.Errorf("chart namespace %s enforces Pod Security %q, config/default %q", ns, got, want)
		}
	}
	for _, kind := range []string{"Deployment", "DaemonSet"} {
		for k, u := range chart {
			if k.Kind != kind {
				continue
			}
			sel, _, _ := unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
			labels, _, _ := unstructured.NestedStringMap(u.Object, "spec", "template", "metadata", "labels")
			if !labelsMatch(sel, labels) {
				t.Errorf("chart %s: selector %v does not select the pod labels %v", k, sel, labels)
			}
		}
	}
}

// TestChartCRDs: the chart's CRDs are config/crd/bases', in crds/, which
// Helm installs before it builds the templates (the NodeFirewallConfig
// among them needs its CRD) and never deletes; no template holds one.
func TestChartCRDs(t *testing.T) {
	ch, err := loader.Load(filepath.Join(repoRoot, chartDir))
	if err != nil {
		t.Fatal(err)
	}
	var list []*unstructured.Unstructured
	for _, crd := range ch.CRDObjects() {
		objs, err := parseObjects(crd.File.Data)
		if err != nil {
			t.Fatalf("%s: %v", crd.Filename, err)
		}
		list = append(list, objs...)
	}
	got, err := index(list)
	if err != nil {
		t.Fatal(err)
	}
	want := readCRDs(t)
	if d := diff(want.keys(), got.keys()); d != "" {
		t.Fatalf("the chart's crds/ and config/crd/bases differ (-bases +chart):\n%s\n%s", d, syncHint)
	}
	for k := range want {
		if d := diff(want[k].Object, got[k].Object); d != "" {
			t.Errorf("chart %s differs from config/crd/bases (-bases +chart):\n%s\n%s", k, d, syncHint)
		}
	}
	for _, tmpl := range ch.Templates {
		if strings.Contains(string(tmpl.Data), "kind: CustomResourceDefinition") {
			t.Errorf("template %s holds a CRD: CRDs belong in crds/", tmpl.Name)
		}
	}
}

// TestChartValues: the values that change the install do what they say.
func TestChartValues(t *testing.T) {
	objs := renderChart(t, map[string]any{
		"namespaces": map[string]any{"agent": "fw-agent", "manager": "fw-system"},
		"agent": map[string]any{
			"image":      map[string]any{"repository": "registry.example/agent", "tag": "v1.2.3"},
			"healthPort": 19862,
		},
		"config": map[string]any{
			"failsafes": map[string]any{
				"inbound":  []any{map[string]any{"protocol": "TCP", "ports": []any{map[string]any{"port": 22}}, "sources": []any{"10.0.0.0/8"}}},
				"outbound": []any{},
			},
			"agent": map[string]any{"resyncPeriod": "30s", "confirmEndpoint": "10.0.0.1:6443"},
		},
		"manager": map[string]any{
			"image":     map[string]any{"repository": "registry.example/manager", "tag": "v1.2.3"},
			"extraArgs": []any{"--write-concurrency=4"},
		},
	})

	ds := into[appsv1.DaemonSet](t, objs.get(t, "DaemonSet", "fw-agent", agentName))
	c := ds.Spec.Template.Spec.Containers[0]
	if c.Image != "registry.example/agent:v1.2.3" {
		t.Errorf("agent image %q", c.Image)
	}
	if !slices.Contains(c.Args, "--health-probe-bind-address=:19862") {
		t.Errorf("agent args %v lack --health-probe-bind-address=:19862", c.Args)
	}
	// The settings reach the NodeFirewallConfig that agents, controller
	// and failsafe warning read: a list replaces the default one, [] means
	// none, and what is not set keeps its default.
	cfg := into[fwv1.NodeFirewallConfig](t, objs.get(t, "NodeFirewallConfig", "", fwv1.NodeFirewallConfigName))
	got, err := clusterconfig.For(&cfg.Spec)
	if err != nil {
		t.Fatal(err)
	}
	want := clusterconfig.Defaults()
	want.FailsafeInbound = []compile.Failsafe{{Protocol: fwv1.ProtocolTCP, Ports: compile.PortInterval{First: 22, Last: 22},
		Sources: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	want.FailsafeOutbound = []compile.Failsafe{}
	want.ResyncPeriod, want.ConfirmEndpoint = 30*time.Second, "10.0.0.1:6443"
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Errorf("the chart's NodeFirewallConfig (-want +got):\n%s", d)
	}
	if !hasPort(c.Ports, "health", 19862) {
		t.Errorf("agent ports %+v lack health 19862", c.Ports)
	}
	dep := into[appsv1.Deployment](t, objs.get(t, "Deployment", "fw-system", managerName))
	mc := dep.Spec.Template.Spec.Containers[0]
	if mc.Image != "registry.example/manager:v1.2.3" || !slices.Contains(mc.Args, "--write-concurrency=4") {
		t.Errorf("manager image %q args %v", mc.Image, mc.Args)
	}

	// The admission policy follows the agent's namespace.
	vap := into[admissionv1.ValidatingAdmissionPolicy](t, objs.get(t, "ValidatingAdmissionPolicy", "", admissionPolicy))
	user := "'system:serviceaccount:fw-agent:" + agentName + "'"
	if len(vap.Spec.MatchConditions) != 1 || !strings.Contains(vap.Spec.MatchConditions[0].Expression, user) {
		t.Errorf("matchConditions %+v: want one naming %s", vap.Spec.MatchConditions, user)
	}
	for _, k := range []objKey{{"ClusterRoleBinding", "", "nodefw-agent-rolebinding"}, {"ClusterRoleBinding", "", "nodefw-manager-rolebinding"}} {
		subjects, _, _ := unstructured.NestedSlice(objs.get(t, k.Kind, k.Namespace, k.Name).Object, "subjects")
		ns := subjects[0].(map[string]any)["namespace"]
		if ns != "fw-agent" && ns != "fw-system" {
			t.Errorf("%s binds a service account in %v", k, ns)
		}
	}

	// Plain HTTP metrics only when asked for.
	plain := renderChart(t, map[string]any{"agent": map[string]any{"metricsSecure": false}})
	pc := into[appsv1.DaemonSet](t, plain.get(t, "DaemonSet", agentNamespace, agentName)).Spec.Template.Spec.Containers[0]
	if !slices.Contains(pc.Args, "--metrics-secure=false") || !hasPort(pc.Ports, "metrics", 9861) {
		t.Errorf("agent.metricsSecure=false: args %v, ports %+v; want --metrics-secure=false and a port named metrics", pc.Args, pc.Ports)
	}

	// Without namespaces.create the chart leaves the namespaces alone.
	noNS := renderChart(t, map[string]any{"namespaces": map[string]any{"create": false}})
	for k := range noNS {
		if k.Kind == "Namespace" {
			t.Errorf("namespaces.create=false still renders %s", k)
		}
	}
}
