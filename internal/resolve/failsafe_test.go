package resolve

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

func TestFailsafeShadows(t *testing.T) {
	in, out := compile.DefaultFailsafeInbound(), compile.DefaultFailsafeOutbound()
	tests := []struct {
		name string
		rule fwv1.Rule
		want []string
	}{
		{"accept never shadows", fwv1.Rule{Name: "ssh", Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 22}}}, nil},
		{"drop of ssh", fwv1.Rule{Name: "no-ssh", Chain: fwv1.ChainInput, Action: fwv1.ActionDrop, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 22}}},
			[]string{"spec.rules[0] (no-ssh) would drop failsafe port(s) tcp:22, which nodes accept before any rule"}},
		{"range over etcd", fwv1.Rule{Name: "low", Chain: fwv1.ChainInput, Action: fwv1.ActionReject, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 2000, EndPort: 2379}}},
			[]string{"spec.rules[0] (low) would reject failsafe port(s) tcp:2379-2380, which nodes accept before any rule"}},
		{"udp drop misses tcp failsafes", fwv1.Rule{Name: "udp", Chain: fwv1.ChainInput, Action: fwv1.ActionDrop, Protocol: fwv1.ProtocolUDP, Ports: []fwv1.PortRange{{Port: 6443}}}, nil},
		{"drop everything outbound", fwv1.Rule{Name: "all", Chain: fwv1.ChainOutput, Action: fwv1.ActionDrop},
			[]string{"spec.rules[0] (all) would drop failsafe port(s) udp:53, tcp:53, tcp:6443, udp:67-68, which nodes accept before any rule"}},
		{"prerouting drop of the kubelet", fwv1.Rule{Name: "pre", Chain: fwv1.ChainPreRouting, Action: fwv1.ActionDrop, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 10000, EndPort: 32767}}},
			[]string{"spec.rules[0] (pre) would drop failsafe port(s) tcp:10250, which nodes accept before any rule"}},
		{"forward has no failsafes", fwv1.Rule{Name: "fwd", Chain: fwv1.ChainForward, Action: fwv1.ActionDrop}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: fwv1.NodeFirewallPolicySpec{Rules: []fwv1.Rule{tc.rule}}}
			var got []string
			for _, pr := range Resolve(Input{Policies: []fwv1.NodeFirewallPolicy{*p}, Failsafes: Failsafes{Inbound: in, Outbound: out}}).Problems {
				got = append(got, pr.Message)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
