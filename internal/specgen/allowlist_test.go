package specgen

import (
	"reflect"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/reference"
)

func TestAllowlist(t *testing.T) {
	const n, probe = 2000, 5001
	spec := Allowlist(n, probe, "192.0.2.1", "2001:db8::1")
	if len(spec.Rules) != n {
		t.Fatalf("%d rules, want %d", len(spec.Rules), n)
	}
	for i, r := range spec.Rules[:n-1] {
		if r.Ports[0].Port == probe || r.Action != v1alpha1.ActionAccept || len(r.Sources) != 1 {
			t.Fatalf("rule %d: %+v", i, r)
		}
	}
	if last := spec.Rules[n-1]; last.Ports[0].Port != probe || len(last.Sources) != 2 {
		t.Errorf("last rule: %+v", last)
	}
	if !reflect.DeepEqual(spec, Allowlist(n, probe, "192.0.2.1", "2001:db8::1")) {
		t.Error("the same size gave another spec")
	}
	if err := reference.Validate(spec); err != nil {
		t.Error(err)
	}
}
