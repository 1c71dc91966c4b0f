// Package manifests tests the deployment manifests: config/default as
// kustomize builds it, the Helm chart in charts/nodefw against it, the
// admission policies (the agent's scoping and the failsafe warning) against
// a real API server, and the Argo CD health checks in config/argocd.
package manifests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
)

// The names config/default gives the objects that the checks single out.
const (
	managerNamespace = "nodefw-system"
	agentNamespace   = "nodefw-agent"
	managerName      = "nodefw-controller-manager"
	agentName        = "nodefw-agent"
	managerRole      = "nodefw-manager-role"
	agentRole        = "nodefw-agent-role"
	metricsAuthRole  = "nodefw-metrics-auth-role"
	metricsService   = "nodefw-controller-manager-metrics-service"
	admissionPolicy  = "nodefw-agent-own-nodefirewall"
	agentUser        = "system:serviceaccount:nodefw-agent:nodefw-agent"
	managerImage     = "ghcr.io/nodefw/nodefw-manager:latest"
	agentImage       = "ghcr.io/nodefw/nodefw-agent:latest"
	fwGroup          = "firewall.nodefw.io"
	// The admission policy names the agent's finalizer; it must be the API's.
	agentFinalizer = fwv1.AgentFinalizer
)

// repoRoot is the repository's root, two levels above this package.
var repoRoot = filepath.Join("..", "..")

// objKey identifies an object in a rendered install.
type objKey struct {
	Kind, Namespace, Name string
}

func (k objKey) String() string {
	if k.Namespace == "" {
		return k.Kind + " " + k.Name
	}
	return k.Kind + " " + k.Namespace + "/" + k.Name
}

// objects is a rendered install, by kind, namespace and name.
type objects map[objKey]*unstructured.Unstructured

func (o objects) keys() []objKey {
	keys := make([]objKey, 0, len(o))
	for k := range o {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	return keys
}

// get returns the object, failing the test when it is missing.
func (o objects) get(t *testing.T, kind, namespace, name string) *unstructured.Unstructured {
	t.Helper()
	obj, ok := o[objKey{kind, namespace, name}]
	if !ok {
		t.Fatalf("%s is missing; the install has: %v", objKey{kind, namespace, name}, o.keys())
	}
	return obj
}

// into converts the object to a typed one.
func into[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("decoding %s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return out
}

// parseObjects decodes a multi-document YAML stream. Both installs go
// through it, so that their values compare alike.
func parseObjects(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

func index(list []*unstructured.Unstructured) (objects, error) {
	objs := objects{}
	for _, u := range list {
		k := objKey{u.GetKind(), u.GetNamespace(), u.GetName()}
		if _, dup := objs[k]; dup {
			return nil, fmt.Errorf("%s appears twice", k)
		}
		objs[k] = u
	}
	return objs, nil
}

// buildKustomize builds a kustomization directory of the repository as
// `kubectl kustomize` does.
func buildKustomize(t *testing.T, dir string) objects {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(repoRoot, dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	data, err := resMap.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	list, err := parseObjects(data)
	if err != nil {
		t.Fatalf("parsing kustomize build %s: %v", dir, err)
	}
	objs, err := index(list)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return objs
}

// readCRDs reads the generated CRDs in config/crd/bases.
func readCRDs(t *testing.T) objects {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(envtesting.CRDDir(repoRoot), "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in config/crd/bases (%v)", err)
	}
	var list []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := parseObjects(data)
		if err != nil {
			t.Fatalf("parsing %s: %v", f, err)
		}
		list = append(list, objs...)
	}
	objs, err := index(list)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// rule is one permission of an RBAC rule: API group, resource, verb.
type rule struct{ Group, Resource, Verb string }

func (r rule) String() string { return r.Group + "/" + r.Resource + ":" + r.Verb }

// permissions expands a Role's or ClusterRole's rules into single
// permissions; a non-resource URL is a rule with Group "url:".
func permissions(t *testing.T, role *unstructured.Unstructured) map[rule]bool {
	t.Helper()
	rules, _, err := unstructured.NestedSlice(role.Object, "rules")
	if err != nil {
		t.Fatalf("%s: %v", role.GetName(), err)
	}
	perms := map[rule]bool{}
	for _, r := range rules {
		m := r.(map[string]any)
		strs := func(field string) []string {
			s, _, err := unstructured.NestedStringSlice(m, field)
			if err != nil {
				t.Fatalf("%s: %s: %v", role.GetName(), field, err)
			}
			return s
		}
		if names := strs("resourceNames"); len(names) > 0 {
			t.Fatalf("%s: resourceNames %v: the checks here do not expect them", role.GetName(), names)
		}
		for _, v := range strs("verbs") {
			for _, u := range strs("nonResourceURLs") {
				perms[rule{"url:", u, v}] = true
			}
			for _, g := range strs("apiGroups") {
				for _, res := range strs("resources") {
					perms[rule{g, res, v}] = true
				}
			}
		}
	}
	return perms
}

func sortedRules(perms map[rule]bool) []string {
	out := make([]string, 0, len(perms))
	for r := range perms {
		out = append(out, r.String())
	}
	sort.Strings(out)
	return out
}

// diff is cmp.Diff, cut short: a CRD's diff can run to pages.
func diff(want, got any) string {
	const max = 4000
	d := cmp.Diff(want, got)
	if len(d) > max {
		d = d[:max] + fmt.Sprintf("\n... (%d more bytes)", len(d)-max)
	}
	return d
}
