package status_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/resolve"
	"github.com/nodefw/nodefw/internal/status"
)

// These tests check that the conditions nodefw writes read as intended by
// kstatus, the library Flux, kpt and `kubectl wait`-style tools use to
// decide whether an object is InProgress, Current or Failed. Each object is
// computed by this package's functions, serialized to JSON as the API
// server would serve it, and handed to kstatus.Compute.

// ksAt is a fixed time for lastAppliedTime.
var ksAt = metav1.NewTime(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC))

// ksNodes returns worker nodes with the given names.
func ksNodes(names ...string) []corev1.Node {
	nodes := make([]corev1.Node, len(names))
	for i, n := range names {
		nodes[i] = corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"role": "worker"}}}
	}
	return nodes
}

// ksPolicy returns a policy at generation 1, with no status, selecting the
// worker nodes.
func ksPolicy() *fwv1.NodeFirewallPolicy {
	return &fwv1.NodeFirewallPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: fwv1.GroupVersion.String(), Kind: "NodeFirewallPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "worker", Generation: 1},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "worker"}},
			Priority:     ptr.To[int32](100),
			Mode:         fwv1.PolicyModeEnforce,
			Rules: []fwv1.Rule{{
				Name: "kubelet", Chain: fwv1.ChainInput, Action: fwv1.ActionAccept,
				Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 10250}},
			}},
		},
	}
}

// ksCluster is a policy, the nodes, and the NodeFirewalls the controller
// would write for them, whose spec.policies reference the policy's current
// generation, as the resolver writes it.
type ksCluster struct {
	policy  *fwv1.NodeFirewallPolicy
	matched []string
	nfws    map[string]*fwv1.NodeFirewall
	probs   []resolve.Problem
}

// ksResolve resolves p against nodes as the controller does. Each
// NodeFirewall starts at generation 1 with no status: no agent has acted.
func ksResolve(t *testing.T, p *fwv1.NodeFirewallPolicy, nodes []corev1.Node) *ksCluster {
	t.Helper()
	res := resolve.Resolve(resolve.Input{Policies: []fwv1.NodeFirewallPolicy{*p}, Nodes: nodes})
	c := &ksCluster{policy: p, matched: res.Matches[p.Name], nfws: map[string]*fwv1.NodeFirewall{}, probs: res.Problems}
	for name, spec := range res.Nodes {
		c.nfws[name] = &fwv1.NodeFirewall{
			TypeMeta:   metav1.TypeMeta{APIVersion: fwv1.GroupVersion.String(), Kind: "NodeFirewall"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
			Spec:       spec,
		}
	}
	for _, n := range c.matched {
		refs := c.nfws[n].Spec.Policies
		if len(refs) != 1 || refs[0].Name != p.Name || refs[0].Generation != p.Generation {
			t.Fatalf("NodeFirewall %s: spec.policies = %+v, want [%s@%d]", n, refs, p.Name, p.Generation)
		}
	}
	return c
}

// applied makes the agents of the named nodes report their NodeFirewall
// programmed.
func (c *ksCluster) applied(t *testing.T, nodes ...string) {
	t.Helper()
	for _, n := range nodes {
		nfw := c.nfws[n]
		nfw.Status = status.NodeApplied(nfw, nil, 4, ksAt)
		if got := resolve.PolicyOnNode(nfw, c.policy.Name, c.policy.Generation); got != resolve.StateApplied {
			t.Fatalf("PolicyOnNode(%s) = %v after NodeApplied, want StateApplied", n, got)
		}
	}
}

// failed makes the agents of the named nodes report a failed apply.
func (c *ksCluster) failed(t *testing.T, nodes ...string) {
	t.Helper()
	for _, n := range nodes {
		nfw := c.nfws[n]
		nfw.Status = status.NodeFailed(nfw, fwv1.ReasonApplyFailed, errors.New("netlink: operation not permitted"))
		if got := resolve.PolicyOnNode(nfw, c.policy.Name, c.policy.Generation); got != resolve.StateFailed {
			t.Fatalf("PolicyOnNode(%s) = %v after NodeFailed, want StateFailed", n, got)
		}
	}
}

// rollUp stores the controller's roll-up in the policy's status.
func (c *ksCluster) rollUp() *fwv1.NodeFirewallPolicy {
	c.policy.Status = status.Policy(c.policy, c.matched, c.nfws, c.probs)
	return c.policy
}

// ksCompute runs kstatus on obj as the API server would serve it: JSON,
// decoded into an unstructured object. Without status, the status key is
// dropped, as it is on an object the API server has just created.
func ksCompute(t *testing.T, obj any, withoutStatus bool) *kstatus.Result {
	t.Helper()
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if withoutStatus {
		unstructured.RemoveNestedField(u.Object, "status")
	}
	res, err := kstatus.Compute(u)
	if err != nil {
		t.Fatalf("kstatus.Compute: %v", err)
	}
	return res
}

func TestKstatusPolicy(t *testing.T) {
	tests := []struct {
		name string
		// build returns the policy as the API server would serve it.
		build         func(t *testing.T) *fwv1.NodeFirewallPolicy
		withoutStatus bool
		want          kstatus.Status
	}{
		{
			// kstatus takes an object without observedGeneration and
			// without conditions as Current: it cannot tell that a
			// controller will act on it. That is why the CRD serves a
			// policy without a status with observedGeneration 0, which
			// reads InProgress (api/v1alpha1's TestNewPolicyReadsInProgress
			// checks it against the API server), and why the controller
			// writes status.Reconciling for every later generation before
			// it resolves anything (markReconciling); the cases below check
			// that this reads InProgress.
			name:          "fresh policy, no status at all: kstatus reads Current",
			build:         func(*testing.T) *fwv1.NodeFirewallPolicy { return ksPolicy() },
			withoutStatus: true,
			want:          kstatus.CurrentStatus,
		},
		{
			name:  "fresh policy, zero status: kstatus reads Current",
			build: func(*testing.T) *fwv1.NodeFirewallPolicy { return ksPolicy() },
			want:  kstatus.CurrentStatus,
		},
		{
			name: "Reconciling",
			build: func(*testing.T) *fwv1.NodeFirewallPolicy {
				p := ksPolicy()
				p.Status = status.Reconciling(p)
				return p
			},
			want: kstatus.InProgressStatus,
		},
		{
			name: "Reconciling for a new generation of an applied policy",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				c := ksResolve(t, ksPolicy(), ksNodes("a", "b"))
				c.applied(t, "a", "b")
				p := c.rollUp()
				p.Generation = 2
				p.Status = status.Reconciling(p)
				return p
			},
			want: kstatus.InProgressStatus,
		},
		{
			name: "some nodes pending",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				c := ksResolve(t, ksPolicy(), ksNodes("a", "b", "c"))
				c.applied(t, "a")
				return c.rollUp()
			},
			want: kstatus.InProgressStatus,
		},
		{
			name: "no node has acted yet, after Reconciling",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				p := ksPolicy()
				p.Status = status.Reconciling(p)
				return ksResolve(t, p, ksNodes("a", "b")).rollUp()
			},
			want: kstatus.InProgressStatus,
		},
		{
			name: "a node's agent has not reported its NodeFirewall's new generation",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				c := ksResolve(t, ksPolicy(), ksNodes("a", "b"))
				c.applied(t, "a", "b")
				// The controller bumped b's NodeFirewall to a newer spec;
				// its agent has not reported it yet.
				c.nfws["b"].Generation = 2
				return c.rollUp()
			},
			want: kstatus.InProgressStatus,
		},
		{
			name: "all nodes applied",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				c := ksResolve(t, ksPolicy(), ksNodes("a", "b"))
				c.applied(t, "a", "b")
				return c.rollUp()
			},
			want: kstatus.CurrentStatus,
		},
		{
			name: "all nodes applied, after Reconciling and a pending roll-up",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				p := ksPolicy()
				p.Status = status.Reconciling(p)
				c := ksResolve(t, p, ksNodes("a", "b"))
				c.rollUp()
				c.applied(t, "a")
				c.rollUp()
				c.applied(t, "b")
				return c.rollUp()
			},
			want: kstatus.CurrentStatus,
		},
		{
			name: "a node failed",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				c := ksResolve(t, ksPolicy(), ksNodes("a", "b", "c"))
				c.applied(t, "a")
				c.failed(t, "b")
				return c.rollUp()
			},
			want: kstatus.FailedStatus,
		},
		{
			name: "a node failed while another was reconciling before",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				c := ksResolve(t, ksPolicy(), ksNodes("a", "b"))
				c.rollUp()
				c.failed(t, "a")
				return c.rollUp()
			},
			want: kstatus.FailedStatus,
		},
		{
			name: "a failed node recovered",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				c := ksResolve(t, ksPolicy(), ksNodes("a", "b"))
				c.applied(t, "a")
				c.failed(t, "b")
				c.rollUp()
				c.applied(t, "b")
				return c.rollUp()
			},
			want: kstatus.CurrentStatus,
		},
		{
			name: "invalid selector",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				p := ksPolicy()
				p.Spec.NodeSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "role", Operator: "Near", Values: []string{"worker"}},
				}}
				c := ksResolve(t, p, ksNodes("a"))
				if len(c.probs) == 0 || c.probs[0].Reason != fwv1.ReasonInvalidSelector {
					t.Fatalf("resolver problems = %+v, want an InvalidSelector", c.probs)
				}
				return c.rollUp()
			},
			want: kstatus.FailedStatus,
		},
		{
			name: "invalid selector, after Reconciling",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				p := ksPolicy()
				p.Spec.NodeSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "role", Operator: metav1.LabelSelectorOpIn},
				}}
				p.Status = status.Reconciling(p)
				return ksResolve(t, p, ksNodes("a")).rollUp()
			},
			want: kstatus.FailedStatus,
		},
		{
			name: "no matching nodes",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				p := ksPolicy()
				p.Status = status.Reconciling(p)
				p.Spec.NodeSelector.MatchLabels = map[string]string{"role": "gpu"}
				return ksResolve(t, p, ksNodes("a", "b")).rollUp()
			},
			want: kstatus.CurrentStatus,
		},
		{
			name: "all nodes applied, default action overridden by another policy",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				c := ksResolve(t, ksPolicy(), ksNodes("a"))
				c.applied(t, "a")
				c.probs = append(c.probs, resolve.Problem{
					Policy: "worker", Reason: fwv1.ReasonDefaultActionConflict,
					Message: "defaultActions.input Drop is overridden by policy base on node a",
				})
				p := c.rollUp()
				if !ksHasTrue(p.Status.Conditions, fwv1.ConditionDefaultActionConflict) {
					t.Fatalf("conditions %+v: want %s=True", p.Status.Conditions, fwv1.ConditionDefaultActionConflict)
				}
				return p
			},
			want: kstatus.CurrentStatus,
		},
		{
			name: "rollout halted",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				c := ksResolve(t, ksPolicy(), ksNodes("a", "b"))
				c.applied(t, "a")
				c.probs = append(c.probs, resolve.Problem{
					Policy: "worker", Reason: fwv1.ReasonRolloutHalted,
					Message: "node b reverted generation 1: rollout halted",
				})
				return c.rollUp()
			},
			want: kstatus.FailedStatus,
		},
		{
			name: "all nodes applied, a rule shadowed by a failsafe port",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				c := ksResolve(t, ksPolicy(), ksNodes("a"))
				c.applied(t, "a")
				c.probs = append(c.probs, resolve.Problem{
					Policy: "worker", Reason: fwv1.ReasonFailsafeShadowed,
					Message: "rule no-ssh drops TCP 22, which the failsafe ports accept first",
				})
				p := c.rollUp()
				if !ksHasTrue(p.Status.Conditions, fwv1.ConditionFailsafeShadowed) {
					t.Fatalf("conditions %+v: want %s=True", p.Status.Conditions, fwv1.ConditionFailsafeShadowed)
				}
				return p
			},
			want: kstatus.CurrentStatus,
		},
		{
			name: "stale observedGeneration: spec edited after the roll-up",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				c := ksResolve(t, ksPolicy(), ksNodes("a", "b"))
				c.applied(t, "a", "b")
				p := c.rollUp()
				p.Generation = 2
				return p
			},
			want: kstatus.InProgressStatus,
		},
		{
			name: "stale observedGeneration of a failed policy",
			build: func(t *testing.T) *fwv1.NodeFirewallPolicy {
				c := ksResolve(t, ksPolicy(), ksNodes("a"))
				c.failed(t, "a")
				p := c.rollUp()
				p.Generation = 2
				return p
			},
			want: kstatus.InProgressStatus,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.build(t)
			res := ksCompute(t, p, tt.withoutStatus)
			if res.Status != tt.want {
				t.Errorf("kstatus = %s (%q), want %s\nstatus: %+v", res.Status, res.Message, tt.want, p.Status)
			}
		})
	}
}

// TestKstatusReconcilingAfterFailure covers the edit of a policy whose
// previous generation failed: the controller first writes
// status.Reconciling for the new generation. kstatus reads the first of
// Reconciling=True and Stalled=True in the list, so a Stalled=True left
// over from the failed generation must not remain beside Reconciling=True.
func TestKstatusReconcilingAfterFailure(t *testing.T) {
	c := ksResolve(t, ksPolicy(), ksNodes("a"))
	c.failed(t, "a")
	p := c.rollUp()
	p.Generation = 2
	p.Status = status.Reconciling(p)
	res := ksCompute(t, p, false)
	if res.Status != kstatus.InProgressStatus {
		t.Errorf("kstatus = %s (%q), want InProgress: a leftover Stalled=True must not stay beside Reconciling", res.Status, res.Message)
	}
}

func TestKstatusNodeFirewall(t *testing.T) {
	nfw := func(t *testing.T) *fwv1.NodeFirewall {
		return ksResolve(t, ksPolicy(), ksNodes("a")).nfws["a"]
	}
	tests := []struct {
		name          string
		build         func(t *testing.T) *fwv1.NodeFirewall
		withoutStatus bool
		want          kstatus.Status
	}{
		{
			// As for a policy, kstatus cannot tell an object no agent has
			// acted on from a finished one; the agent writes no
			// Reconciling. The policy's roll-up carries the progress: it
			// reads InProgress until every node's agent reports.
			name:          "no status yet: kstatus reads Current",
			build:         nfw,
			withoutStatus: true,
			want:          kstatus.CurrentStatus,
		},
		{
			name: "NodeApplied",
			build: func(t *testing.T) *fwv1.NodeFirewall {
				n := nfw(t)
				n.Status = status.NodeApplied(n, nil, 7, ksAt)
				return n
			},
			want: kstatus.CurrentStatus,
		},
		{
			name: "NodeFailed, apply error",
			build: func(t *testing.T) *fwv1.NodeFirewall {
				n := nfw(t)
				n.Status = status.NodeFailed(n, fwv1.ReasonApplyFailed, errors.New("netlink receive: no such file or directory"))
				return n
			},
			want: kstatus.FailedStatus,
		},
		{
			name: "NodeFailed, invalid spec",
			build: func(t *testing.T) *fwv1.NodeFirewall {
				n := nfw(t)
				n.Status = status.NodeFailed(n, fwv1.ReasonInvalidSpec, errors.New("rules[0].sources[0]: not an address"))
				return n
			},
			want: kstatus.FailedStatus,
		},
		{
			name: "NodeFailed, reverted after losing the control plane",
			build: func(t *testing.T) *fwv1.NodeFirewall {
				n := nfw(t)
				n.Status = status.NodeFailed(n, fwv1.ReasonReverted, errors.New("generation 1 cut the node off from its control plane"))
				return n
			},
			want: kstatus.FailedStatus,
		},
		{
			name: "NodeApplied after NodeFailed",
			build: func(t *testing.T) *fwv1.NodeFirewall {
				n := nfw(t)
				n.Status = status.NodeFailed(n, fwv1.ReasonApplyFailed, errors.New("busy"))
				n.Generation = 2
				n.Status = status.NodeApplied(n, nil, 7, ksAt)
				return n
			},
			want: kstatus.CurrentStatus,
		},
		{
			name: "stale generation after NodeApplied",
			build: func(t *testing.T) *fwv1.NodeFirewall {
				n := nfw(t)
				n.Status = status.NodeApplied(n, nil, 7, ksAt)
				n.Generation = 2
				return n
			},
			want: kstatus.InProgressStatus,
		},
		{
			name: "stale generation after NodeFailed",
			build: func(t *testing.T) *fwv1.NodeFirewall {
				n := nfw(t)
				n.Status = status.NodeFailed(n, fwv1.ReasonApplyFailed, errors.New("busy"))
				n.Generation = 2
				return n
			},
			want: kstatus.InProgressStatus,
		},
		{
			name: "being deleted: the agent's finalizer is removing the table",
			build: func(t *testing.T) *fwv1.NodeFirewall {
				n := nfw(t)
				n.Status = status.NodeApplied(n, nil, 7, ksAt)
				now := metav1.NewTime(ksAt.Add(time.Minute))
				n.DeletionTimestamp = &now
				n.Finalizers = []string{fwv1.AgentFinalizer}
				return n
			},
			want: kstatus.TerminatingStatus,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.build(t)
			res := ksCompute(t, n, tt.withoutStatus)
			if res.Status != tt.want {
				t.Errorf("kstatus = %s (%q), want %s\nstatus: %+v", res.Status, res.Message, tt.want, n.Status)
			}
		})
	}
}

func ksHasTrue(conds []metav1.Condition, t string) bool {
	for _, c := range conds {
		if c.Type == t {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}
