package nodefwtest_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/pkg/nodefwtest"
)

// TestSamplePolicies is what a platform team writes for its own policies:
// here nodefw's samples, on a control-plane node and a worker, through
// a policy change and a relabelled node.
func TestSamplePolicies(t *testing.T) {
	// As in the demo, the agents keep only SSH as an inbound failsafe port.
	env := nodefwtest.Start(t, nodefwtest.Options{FailsafeInbound: "tcp:22"})
	env.CreateNode(t, "cp-1", map[string]string{"node-role.kubernetes.io/control-plane": ""})
	env.CreateNode(t, "worker-1", map[string]string{"kubernetes.io/hostname": "worker-1"})
	env.ApplyFiles(t, "../../config/samples")

	etcd := nodefwtest.Packet{Proto: "tcp", From: "192.168.0.21:40000", To: "192.168.0.10:2379", InInterface: "eth0"}
	env.ExpectDecision(t, "cp-1", etcd, nodefwtest.Accept, "control-plane/etcd")
	env.ExpectDecision(t, "worker-1", etcd, nodefwtest.Drop, "default")
	env.ExpectDecision(t, "worker-1", nodefwtest.Packet{Proto: "tcp", From: "203.0.113.9", To: "192.168.0.21:30080"}, nodefwtest.Accept, "worker/nodeports")
	env.ExpectDecision(t, "worker-1", nodefwtest.Packet{Proto: "tcp", From: "203.0.113.9", To: "192.168.0.21:22"}, nodefwtest.Accept, "failsafe")
	env.ExpectVerdict(t, "worker-1", nodefwtest.Packet{Chain: "Forward", Proto: "udp", From: "10.244.1.2", To: "10.96.0.10:53"}, nodefwtest.Accept)

	// A policy that rejects the NodePort range's start on every node,
	// evaluated before the samples.
	env.Apply(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "no-low-nodeports"},
		Spec: fwv1.NodeFirewallPolicySpec{
			Priority: 10,
			Rules: []fwv1.Rule{{
				Name: "reject", Chain: fwv1.ChainInput, Protocol: fwv1.ProtocolTCP,
				Ports: []fwv1.PortRange{{Port: 30000, EndPort: 30099}}, Action: fwv1.ActionReject,
			}},
		},
	})
	tr := env.Trace(t, "worker-1", nodefwtest.Packet{Proto: "tcp", From: "203.0.113.9", To: "192.168.0.21:30080"})
	if tr.Verdict != nodefwtest.Reject || tr.DecidedBy != "no-low-nodeports/reject" || strings.Join(tr.Policies, ",") != "no-low-nodeports,worker,strict-output" {
		t.Errorf("after the new policy: %s by %s, policies %v\n%s", tr.Verdict, tr.DecidedBy, tr.Policies, nodefwtest.FormatTrace(tr))
	}

	// worker-1 becomes a control-plane node: etcd opens, as the node's
	// NodeFirewall follows its labels.
	env.LabelNode(t, "worker-1", map[string]string{"node-role.kubernetes.io/control-plane": ""})
	env.ExpectDecision(t, "worker-1", etcd, nodefwtest.Accept, "control-plane/etcd")

	env.DeletePolicy(t, "no-low-nodeports")
	env.ExpectDecision(t, "cp-1", nodefwtest.Packet{Proto: "tcp", From: "203.0.113.9", To: "192.168.0.10:30080"}, nodefwtest.Drop, "default")

	// A wrong expectation fails the test with the packet's path.
	failed := failure(func(tb testing.TB) {
		env.ExpectDecision(tb, "cp-1", etcd, nodefwtest.Accept, "control-plane/kubelet")
	})
	for _, want := range []string{
		"nodefwtest: node cp-1: verdict accept decided by control-plane/etcd, want accept decided by control-plane/kubelet",
		"1  control-plane/flannel-vxlan   Accept  no match on protocol: tcp, wants UDP",
		"verdict: accept, decided by rule control-plane/etcd",
	} {
		if !strings.Contains(failed, want) {
			t.Errorf("the failure does not say %q:\n%s", want, failed)
		}
	}
	if failed := failure(func(tb testing.TB) {
		env.ExpectVerdict(tb, "cp-1", nodefwtest.Packet{Proto: "tcp", From: "10.0.0.1", To: "10.0.0.2"}, nodefwtest.Accept)
	}); !strings.Contains(failed, "nodefwtest: packet: to: tcp needs a port") {
		t.Errorf("a bad packet: %q", failed)
	}
}

// recorder is a test that records its failures instead of failing.
type recorder struct {
	testing.TB
	failures []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

// failure runs an assertion against a recorder and returns what it
// reported.
func failure(assert func(tb testing.TB)) string {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		assert(r)
	}()
	<-done
	return strings.Join(r.failures, "\n")
}
