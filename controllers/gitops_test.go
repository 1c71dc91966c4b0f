package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// TestApplyingTheSameManifestsTwiceChangesNothing applies the samples with
// server-side apply as a GitOps tool would, twice: the second apply must not
// bump a generation or a resourceVersion, and the controller's field manager
// must own nothing outside status.
func TestApplyingTheSameManifestsTwiceChangesNothing(t *testing.T) {
	ctx := context.Background()
	files, err := filepath.Glob(filepath.Join("..", "config", "samples", "firewall_*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	apply := func() map[string]string {
		versions := map[string]string{}
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(raw, &obj.Object); err != nil {
				t.Fatal(err)
			}
			// A distinct name so that other tests' nodes are unaffected.
			obj.SetName("gitops-" + obj.GetName())
			obj.Object["spec"].(map[string]any)["nodeSelector"] = map[string]any{"matchLabels": map[string]any{"gitops-test": "none"}}
			if err := k8sClient.Patch(ctx, obj, client.Apply, client.FieldOwner("gitops-tool"), client.ForceOwnership); err != nil {
				t.Fatalf("applying %s: %v", f, err)
			}
			t.Cleanup(func() { _ = k8sClient.Delete(ctx, obj) })
			versions[obj.GetName()] = fmt.Sprintf("gen=%d", obj.GetGeneration())
		}
		return versions
	}
	first := apply()
	for name := range first {
		expectStatus(t, name, wantStatus{ready: "True", reason: "NoMatchingNodes"})
	}
	rv := map[string]string{}
	for name := range first {
		p, err := getPolicy(name)
		if err != nil {
			t.Fatal(err)
		}
		rv[name] = p.ResourceVersion
	}
	second := apply()
	for name := range first {
		if first[name] != second[name] {
			t.Errorf("%s: %s after the first apply, %s after the second", name, first[name], second[name])
		}
		p, err := getPolicy(name)
		if err != nil {
			t.Fatal(err)
		}
		if p.ResourceVersion != rv[name] {
			t.Errorf("%s: the second apply moved resourceVersion %s -> %s", name, rv[name], p.ResourceVersion)
		}
		for _, mf := range p.ManagedFields {
			if mf.Manager == FieldManager && mf.Subresource != "status" {
				t.Errorf("%s: the controller manages fields outside status: %s", name, mf.FieldsV1.String())
			}
			if mf.Manager == "gitops-tool" && mf.Subresource != "" {
				t.Errorf("%s: the GitOps tool owns %s fields", name, mf.Subresource)
			}
		}
	}
}
