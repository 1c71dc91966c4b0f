package clusterconfig

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

var cmpOpts = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestFor(t *testing.T) {
	tcp, udp := fwv1.ProtocolTCP, fwv1.ProtocolUDP
	tests := []struct {
		name    string
		spec    fwv1.NodeFirewallConfigSpec
		want    Settings
		wantErr []string
	}{{
		name: "an empty spec is the CRD's defaults",
		want: Defaults(),
	}, {
		name: "every field",
		spec: fwv1.NodeFirewallConfigSpec{
			Failsafes: fwv1.Failsafes{
				Inbound: []fwv1.Failsafe{
					{Protocol: tcp, Ports: []fwv1.PortRange{{Port: 22}}},
					{Protocol: tcp, Ports: []fwv1.PortRange{{Port: 2379, EndPort: 2380}, {Port: 6443}}, Sources: []string{"10.0.0.1/24", "2001:db8::/64", "10.0.1.5"}},
				},
				Outbound: []fwv1.Failsafe{{Protocol: udp, Ports: []fwv1.PortRange{{Port: 53}}, Destinations: []string{"10.96.0.10"}}},
			},
			Agent: fwv1.AgentSettings{
				ResyncPeriod:    &metav1.Duration{Duration: 30 * time.Second},
				ConfirmTimeout:  &metav1.Duration{},
				ConfirmEndpoint: "[2001:db8::1]:6443",
				SetLookups:      ptr.To(false),
			},
		},
		want: Settings{
			FailsafeInbound: []compile.Failsafe{
				{Protocol: tcp, Ports: compile.PortInterval{First: 22, Last: 22}},
				{Protocol: tcp, Ports: compile.PortInterval{First: 2379, Last: 2380}, Sources: pfx("10.0.0.0/24", "2001:db8::/64", "10.0.1.5/32")},
				{Protocol: tcp, Ports: compile.PortInterval{First: 6443, Last: 6443}, Sources: pfx("10.0.0.0/24", "2001:db8::/64", "10.0.1.5/32")},
			},
			FailsafeOutbound: []compile.Failsafe{{Protocol: udp, Ports: compile.PortInterval{First: 53, Last: 53}, Destinations: pfx("10.96.0.10/32")}},
			ResyncPeriod:     30 * time.Second,
			ConfirmEndpoint:  "[2001:db8::1]:6443",
		},
	}, {
		name: "empty lists mean no failsafes",
		spec: fwv1.NodeFirewallConfigSpec{Failsafes: fwv1.Failsafes{Inbound: []fwv1.Failsafe{}, Outbound: []fwv1.Failsafe{}}},
		want: func() Settings {
			s := Defaults()
			s.FailsafeInbound, s.FailsafeOutbound = []compile.Failsafe{}, []compile.Failsafe{}
			return s
		}(),
	}, {
		name: "what the CRD's validation would refuse is refused, every problem named",
		spec: fwv1.NodeFirewallConfigSpec{
			Failsafes: fwv1.Failsafes{
				Inbound: []fwv1.Failsafe{
					{Protocol: fwv1.ProtocolICMP, Ports: []fwv1.PortRange{{Port: 8}}},
					{Protocol: tcp},
					{Protocol: tcp, Ports: []fwv1.PortRange{{Port: 10, EndPort: 5}}},
					{Protocol: tcp, Ports: []fwv1.PortRange{{Port: 22}}, Sources: []string{"10.0.0.300/8"}},
					{Protocol: tcp, Ports: []fwv1.PortRange{{Port: 22}}, Sources: []string{"fe80::1%eth0"}},
					{Protocol: tcp, Ports: []fwv1.PortRange{{Port: 22}}, Destinations: []string{"::ffff:10.0.0.1"}},
				},
				Outbound: []fwv1.Failsafe{{Protocol: udp, Ports: []fwv1.PortRange{{Port: 53}}, Sources: []string{"10.0.0.0/8"}, Destinations: []string{"2001:db8::/32"}}},
			},
			Agent: fwv1.AgentSettings{
				ResyncPeriod:    &metav1.Duration{Duration: 100 * time.Millisecond},
				ConfirmTimeout:  &metav1.Duration{Duration: time.Hour},
				ConfirmEndpoint: "apiserver",
			},
		},
		wantErr: []string{
			`spec.failsafes.inbound[0].protocol: "ICMP" is not TCP, UDP or SCTP`,
			`spec.failsafes.inbound[1].ports: at least one port is required`,
			`spec.failsafes.inbound[2].ports[0]: 10-5 is not a range within 1-65535`,
			`spec.failsafes.inbound[3].sources[0]: "10.0.0.300/8" is not an IP address or CIDR`,
			`spec.failsafes.inbound[4].sources[0]: "fe80::1%eth0" is not an IP address or CIDR`,
			`spec.failsafes.inbound[5].destinations[0]: "::ffff:10.0.0.1" is an IPv4-mapped IPv6 address`,
			`spec.failsafes.outbound[0]: sources and destinations have no IP family in common`,
			`spec.agent.resyncPeriod: 100ms is not between 1s and 1h0m0s`,
			`spec.agent.confirmTimeout: 1h0m0s is not between 0s and 5m0s`,
			`spec.agent.confirmEndpoint: "apiserver" is not host:port`,
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := For(&tc.spec)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("For() = %+v, want an error", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q\nlacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("For(): %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmpOpts); diff != "" {
				t.Errorf("For() (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDefaultsCompile: the default settings are what agents compile.
func TestDefaultsCompile(t *testing.T) {
	d := Defaults()
	if _, err := compile.Compile(fwv1.NodeFirewallSpec{}, compile.Options{FailsafeInbound: d.FailsafeInbound, FailsafeOutbound: d.FailsafeOutbound, SetLookups: d.SetLookups}); err != nil {
		t.Fatal(err)
	}
}

func TestTracker(t *testing.T) {
	flags := Defaults()
	flags.FailsafeInbound = []compile.Failsafe{{Protocol: fwv1.ProtocolTCP, Ports: compile.PortInterval{First: 2222, Last: 2222}}}
	cfg := func(uid string, gen int64, resync time.Duration) *fwv1.NodeFirewallConfig {
		c := &fwv1.NodeFirewallConfig{ObjectMeta: metav1.ObjectMeta{Name: "default", UID: k8stypes.UID("uid-" + uid), Generation: gen}}
		c.Spec.Agent.ResyncPeriod = &metav1.Duration{Duration: resync}
		return c
	}
	with := func(resync time.Duration) Settings {
		s := Defaults()
		s.ResyncPeriod = resync
		return s
	}
	tr := NewTracker(flags)
	steps := []struct {
		name    string
		cfg     *fwv1.NodeFirewallConfig
		want    Settings
		gen     int64
		invalid bool
	}{
		{"no object: the flags", nil, flags, 0, false},
		{"a generation that fails the checks, nothing good before: the flags", cfg("a", 1, time.Millisecond), flags, 0, true},
		{"a good generation takes over", cfg("a", 2, 30*time.Second), with(30 * time.Second), 2, false},
		{"the same generation again", cfg("a", 2, 30*time.Second), with(30 * time.Second), 2, false},
		{"a bad generation keeps the last good one", cfg("a", 3, 2*time.Hour), with(30 * time.Second), 2, true},
		{"a good one again", cfg("a", 4, 20*time.Second), with(20 * time.Second), 4, false},
		{"the object deleted and created again: its generations start over", cfg("b", 1, 5*time.Second), with(5 * time.Second), 1, false},
		{"the object deleted: the flags", nil, flags, 0, false},
	}
	for _, s := range steps {
		got := tr.Observe(s.cfg)
		if diff := cmp.Diff(s.want, got.Settings, cmpOpts); diff != "" {
			t.Errorf("%s: settings (-want +got):\n%s", s.name, diff)
		}
		if got.Generation != s.gen || (got.Err != nil) != s.invalid {
			t.Errorf("%s: generation %d, error %v; want %d, error %v", s.name, got.Generation, got.Err, s.gen, s.invalid)
		}
	}
}
