package manifests

import (
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const (
	chartDir       = "charts/nodefw"
	keepAnnotation = "helm.sh/resource-policy"
	syncHint       = "run hack/sync-chart.sh after changing config/ (CRDs, generated roles, admission policy)"
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
	var list []*unstructured.Unstructured
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

// comparable strips what may differ between the two installs: labels (Helm
// adds its own) and the chart's keep annotation on the CRDs.
func comparable(u *unstructured.Unstructured) map[string]any {
	c := u.DeepCopy()
	c.SetLabels(nil)
	if a := c.GetAnnotations(); a != nil {
		delete(a, keepAnnotation)
		if len(a) == 0 {
			a = nil
		}
		c.SetAnnotations(a)
	}
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

// TestChartCRDs: the chart's CRDs are config/crd/bases', kept on uninstall.
func TestChartCRDs(t *testing.T) {
	chart := renderChart(t, nil)
	for k, want := range readCRDs(t) {
		got, ok := chart[k]
		if !ok {
			t.Errorf("the chart lacks %s; %s", k, syncHint)
			continue
		}
		if got.GetAnnotations()[keepAnnotation] != "keep" {
			t.Errorf("chart %s lacks %s: keep", k, keepAnnotation)
		}
		if d := diff(comparable(want), comparable(got)); d != "" {
			t.Errorf("chart %s differs from config/crd/bases (-bases +chart):\n%s\n%s", k, d, syncHint)
		}
	}

	noKeep := renderChart(t, map[string]any{"crds": map[string]any{"keep": false}})
	for k := range readCRDs(t) {
		if _, ok := noKeep[k].GetAnnotations()[keepAnnotation]; ok {
			t.Errorf("crds.keep=false: %s still has %s", k, keepAnnotation)
		}
	}
	none := renderChart(t, map[string]any{"crds": map[string]any{"install": false}})
	for k := range none {
		if k.Kind == "CustomResourceDefinition" {
			t.Errorf("crds.install=false still renders %s", k)
		}
	}
}

// TestChartValues: the values that change the install do what they say.
func TestChartValues(t *testing.T) {
	objs := renderChart(t, map[string]any{
		"namespaces": map[string]any{"agent": "fw-agent", "manager": "fw-system"},
		"agent": map[string]any{
			"image":            map[string]any{"repository": "registry.example/agent", "tag": "v1.2.3"},
			"failsafeInbound":  "tcp:22",
			"failsafeOutbound": "none",
			"resyncPeriod":     "30s",
			"healthPort":       19862,
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
	for _, arg := range []string{"--failsafe-inbound=tcp:22", "--failsafe-outbound=none", "--resync-period=30s", "--health-probe-bind-address=:19862"} {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("agent args %v lack %s", c.Args, arg)
		}
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
	want := "'system:serviceaccount:fw-agent:" + agentName + "'"
	if len(vap.Spec.MatchConditions) != 1 || !strings.Contains(vap.Spec.MatchConditions[0].Expression, want) {
		t.Errorf("matchConditions %+v: want one naming %s", vap.Spec.MatchConditions, want)
	}
	for _, k := range []objKey{{"ClusterRoleBinding", "", "nodefw-agent-rolebinding"}, {"ClusterRoleBinding", "", "nodefw-manager-rolebinding"}} {
		subjects, _, _ := unstructured.NestedSlice(objs.get(t, k.Kind, k.Namespace, k.Name).Object, "subjects")
		ns := subjects[0].(map[string]any)["namespace"]
		if ns != "fw-agent" && ns != "fw-system" {
			t.Errorf("%s binds a service account in %v", k, ns)
		}
	}

	// Without namespaces.create the chart leaves the namespaces alone.
	noNS := renderChart(t, map[string]any{"namespaces": map[string]any{"create": false}})
	for k := range noNS {
		if k.Kind == "Namespace" {
			t.Errorf("namespaces.create=false still renders %s", k)
		}
	}
}
