package crd

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestDefinitions: the built-in CRDs are those of bases/, all four kinds.
func TestDefinitions(t *testing.T) {
	crds, err := Definitions()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("bases/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(crds) != len(files) || len(crds) != 4 {
		t.Fatalf("%d definitions from %d files, want 4", len(crds), len(files))
	}
	for i, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var meta struct {
			Metadata struct{ Name string } `json:"metadata"`
		}
		if err := yaml.Unmarshal(data, &meta); err != nil {
			t.Fatal(err)
		}
		if got := crds[i].Name; got != meta.Metadata.Name || len(crds[i].Spec.Versions) == 0 {
			t.Errorf("definition %d is %q with %d versions, want %s's %q", i, got, len(crds[i].Spec.Versions), f, meta.Metadata.Name)
		}
	}
}
