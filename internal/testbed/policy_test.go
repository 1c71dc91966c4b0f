package testbed

import (
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
)

func TestLoadSamples(t *testing.T) {
	ps, err := LoadPolicies(filepath.Join("..", "..", "config", "samples"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	if len(ps) != 4 || names[0] != "control-plane" || names[1] != "nodeports-from-cidr" || names[2] != "strict-output" || names[3] != "worker" {
		t.Fatalf("samples = %v, want control-plane, nodeports-from-cidr, strict-output, worker", names)
	}
	found := false
	for _, r := range ps[1].Spec.Rules {
		found = found || slices.Contains(r.Sources, SampleNodePortClients)
	}
	if !found {
		t.Errorf("nodeports-from-cidr no longer holds the placeholder %s that SamplePolicies replaces", SampleNodePortClients)
	}
	// The node and pod addresses are peers, resolved from the Nodes.
	for _, p := range ps {
		for _, r := range p.Spec.Rules {
			if p.Name != "nodeports-from-cidr" && len(r.Sources)+len(r.Destinations) > 0 {
				t.Errorf("%s/%s has literal addresses %v %v; the samples name node and pod addresses as peers", p.Name, r.Name, r.Sources, r.Destinations)
			}
		}
	}
	var peers int
	for _, r := range ps[2].Spec.Rules {
		peers += len(r.From) + len(r.To)
	}
	if peers != 3 {
		t.Errorf("strict-output has %d peers, want its pod CIDR and control-plane peers", peers)
	}
}

func TestNthAddr(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		n      int
		want   string
	}{
		{"172.30.77.0/24", 11, "172.30.77.11"},
		{"10.244.3.0/24", 1, "10.244.3.1"},
		{"10.244.3.7/24", 2, "10.244.3.2"},
		{"10.0.0.0/8", 256, "10.0.1.0"},
	} {
		if got := nthAddr(netip.MustParsePrefix(tc.prefix), tc.n); got.String() != tc.want {
			t.Errorf("nthAddr(%s, %d) = %s, want %s", tc.prefix, tc.n, got, tc.want)
		}
	}
}
