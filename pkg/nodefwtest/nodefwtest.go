// Package nodefwtest tests NodeFirewallPolicies, and controllers that
// write them, in `go test`: it starts an API server (envtest's
// kube-apiserver and etcd) with nodefw's CRDs and nodefw's controller in
// the test's process, creates nodes with labels, and asserts the verdict
// a packet gets on a node. The verdict is read from the node's resolved
// NodeFirewall, the object the node's agent would program, through the
// same evaluator as `nodefw trace` and `nodefw test`, the one the
// differential tests hold the kernel to.
//
//	func TestEtcdOnlyOnTheControlPlane(t *testing.T) {
//		env := nodefwtest.Start(t, nodefwtest.Options{FailsafeInbound: "tcp:22"})
//		env.CreateNode(t, "cp-1", map[string]string{"node-role.kubernetes.io/control-plane": ""})
//		env.CreateNode(t, "worker-1", nil)
//		env.ApplyFiles(t, "deploy/policies")
//		etcd := nodefwtest.Packet{Proto: "tcp", From: "10.0.0.2", To: "10.0.0.1:2379"}
//		env.ExpectDecision(t, "cp-1", etcd, nodefwtest.Accept, "control-plane/etcd")
//		env.ExpectVerdict(t, "worker-1", etcd, nodefwtest.Drop)
//	}
//
// kube-apiserver and etcd come from Options.BinaryAssetsDirectory or
// $KUBEBUILDER_ASSETS, as for any envtest test (setup-envtest installs
// them).
package nodefwtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/controllers"
	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/policytest"
	"github.com/nodefw/nodefw/internal/resolve"
)

// Packet describes a packet as `nodefw trace` takes it: Chain (Input, the
// default; Forward; Output; PreRouting, for a packet addressed to the
// node as the client sent it, before kube-proxy's DNAT), Proto (tcp, udp, sctp, icmp, icmpv6 or a
// number), From (ADDR or ADDR:PORT), To (ADDR:PORT for tcp, udp and
// sctp), InInterface, OutInterface, State (new, the default;
// established, related, invalid) and ICMPType.
type Packet = policytest.Packet

// Trace is a packet's path through a node's chain: every step, the one
// that decided (Decider) and its name (DecidedBy: "policy/rule", an
// implicit accept such as "established" or "failsafe", or "default"), and
// the verdict.
type Trace = policytest.Trace

// Verdict is what a node's firewall does with a packet.
type Verdict = compile.Verdict

// The verdicts.
const (
	Accept Verdict = compile.VerdictAccept
	Drop   Verdict = compile.VerdictDrop
	Reject Verdict = compile.VerdictReject
)

// Options configure an Env.
type Options struct {
	// BinaryAssetsDirectory holds kube-apiserver and etcd; "" means
	// $KUBEBUILDER_ASSETS.
	BinaryAssetsDirectory string
	// FailsafeInbound and FailsafeOutbound are the agents' failsafe ports,
	// in the syntax of their flags ("tcp:22,udp:67-68", or "none"); ""
	// means the agents' defaults. Packets to them are accepted ahead of
	// every rule, as on a real node.
	FailsafeInbound, FailsafeOutbound string
	// Timeout bounds how long an assertion waits for the controller to
	// resolve the node's NodeFirewall; 0 means 30 seconds.
	Timeout time.Duration
	// Logger receives the controller's logs; the zero value discards
	// them.
	Logger logr.Logger
}

// Env is an API server with nodefw's CRDs and its controller running.
type Env struct {
	// Config and Client reach the API server, for the test's own objects
	// and controllers. Client reads without a cache.
	Config *rest.Config
	Client client.Client

	failsafes resolve.Failsafes
	timeout   time.Duration
}

// Start starts the API server and the controller, and stops both when the
// test ends. It fails the test when either cannot start.
func Start(tb testing.TB, opts Options) *Env {
	tb.Helper()
	in, err := compile.ParseFailsafes(orDefault(opts.FailsafeInbound, compile.DefaultFailsafeInbound()))
	if err != nil {
		tb.Fatalf("nodefwtest: FailsafeInbound: %v", err)
	}
	out, err := compile.ParseFailsafes(orDefault(opts.FailsafeOutbound, compile.DefaultFailsafeOutbound()))
	if err != nil {
		tb.Fatalf("nodefwtest: FailsafeOutbound: %v", err)
	}
	env, cfg, err := envtesting.StartBuiltIn(opts.BinaryAssetsDirectory)
	if err != nil {
		tb.Fatalf("nodefwtest: %v", err)
	}
	tb.Cleanup(func() {
		if err := env.Stop(); err != nil {
			tb.Logf("nodefwtest: stopping the API server: %v", err)
		}
	})
	e := &Env{Config: cfg, failsafes: resolve.Failsafes{Inbound: in, Outbound: out}, timeout: opts.Timeout}
	// The failsafes stand in for a NodeFirewallConfig, as the manager's
	// flags do.
	settings := clusterconfig.Defaults()
	settings.FailsafeInbound, settings.FailsafeOutbound = in, out
	if e.timeout == 0 {
		e.timeout = 30 * time.Second
	}
	if e.Client, err = envtesting.NewClient(cfg); err != nil {
		tb.Fatalf("nodefwtest: %v", err)
	}
	logger := opts.Logger
	if logger.GetSink() == nil {
		logger = logr.Discard()
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 envtesting.Scheme,
		Logger:                 logger,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		tb.Fatalf("nodefwtest: creating the controller's manager: %v", err)
	}
	if err := (&controllers.NodeFirewallPolicyReconciler{
		Client:           mgr.GetClient(),
		Recorder:         mgr.GetEventRecorder("nodefw-controller"),
		WriteConcurrency: 4,
		Config:           clusterconfig.NewTracker(settings),
	}).SetupWithManager(mgr); err != nil {
		tb.Fatalf("nodefwtest: setting up the controller: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- mgr.Start(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-stopped; err != nil {
			tb.Logf("nodefwtest: the controller stopped: %v", err)
		}
	})
	return e
}

func orDefault(flag string, defaults []compile.Failsafe) string {
	if flag == "" {
		return compile.FormatFailsafes(defaults)
	}
	return flag
}

// CreateNode creates a Node with the labels.
func (e *Env) CreateNode(tb testing.TB, name string, labels map[string]string) *corev1.Node {
	tb.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := e.Client.Create(context.Background(), n); err != nil {
		tb.Fatalf("nodefwtest: creating node %s: %v", name, err)
	}
	return n
}

// LabelNode replaces a node's labels.
func (e *Env) LabelNode(tb testing.TB, name string, labels map[string]string) {
	tb.Helper()
	n := &corev1.Node{}
	if err := e.Client.Get(context.Background(), client.ObjectKey{Name: name}, n); err != nil {
		tb.Fatalf("nodefwtest: reading node %s: %v", name, err)
	}
	n.Labels = labels
	if err := e.Client.Update(context.Background(), n); err != nil {
		tb.Fatalf("nodefwtest: labelling node %s: %v", name, err)
	}
}

// Apply creates the policies, or replaces the labels, annotations and
// spec of those that exist.
func (e *Env) Apply(tb testing.TB, policies ...*fwv1.NodeFirewallPolicy) {
	tb.Helper()
	ctx := context.Background()
	for _, p := range policies {
		p := p.DeepCopy()
		current := &fwv1.NodeFirewallPolicy{}
		err := e.Client.Get(ctx, client.ObjectKey{Name: p.Name}, current)
		switch {
		case apierrors.IsNotFound(err):
			p.ResourceVersion = ""
			err = e.Client.Create(ctx, p)
		case err == nil:
			current.Labels, current.Annotations, current.Spec = p.Labels, p.Annotations, p.Spec
			err = e.Client.Update(ctx, current)
		}
		if err != nil {
			tb.Fatalf("nodefwtest: applying policy %s: %v", p.Name, err)
		}
	}
}

// ApplyFiles applies the policies of YAML files or directories (their
// .yaml, .yml and .json files), as `kubectl apply -f` would; documents of
// other kinds are skipped.
func (e *Env) ApplyFiles(tb testing.TB, paths ...string) {
	tb.Helper()
	policies, err := policytest.ReadPolicies(paths, nil)
	if err != nil {
		tb.Fatalf("nodefwtest: %v", err)
	}
	if len(policies) == 0 {
		tb.Fatalf("nodefwtest: no NodeFirewallPolicy in %s", strings.Join(paths, ", "))
	}
	for i := range policies {
		e.Apply(tb, &policies[i])
	}
}

// DeletePolicy deletes a policy.
func (e *Env) DeletePolicy(tb testing.TB, name string) {
	tb.Helper()
	p := &fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := e.Client.Delete(context.Background(), p); err != nil {
		tb.Fatalf("nodefwtest: deleting policy %s: %v", name, err)
	}
}

// Trace waits until the controller has resolved the cluster's policies
// for the node, then traces the packet through the node's NodeFirewall.
func (e *Env) Trace(tb testing.TB, node string, p Packet) Trace {
	tb.Helper()
	parsed, err := p.Parse()
	if err != nil {
		tb.Fatalf("nodefwtest: packet: %v", err)
	}
	n := e.resolvedNode(tb, node)
	return policytest.TraceNode(n, policytest.FailsafeOptions(e.failsafes), parsed)
}

// ExpectVerdict asserts the packet's verdict on the node, once the
// controller has resolved it, and prints the packet's path when it is
// another.
func (e *Env) ExpectVerdict(tb testing.TB, node string, p Packet, want Verdict) {
	tb.Helper()
	if t := e.Trace(tb, node, p); t.Verdict != want {
		tb.Errorf("nodefwtest: node %s: verdict %s, want %s\n%s", node, t.Verdict, want, FormatTrace(t))
	}
}

// ExpectDecision asserts the packet's verdict on the node and what
// decides it: "policy/rule", an implicit accept ("established",
// "loopback", "neighbour-discovery", "failsafe") or "default".
func (e *Env) ExpectDecision(tb testing.TB, node string, p Packet, want Verdict, decidedBy string) {
	tb.Helper()
	if t := e.Trace(tb, node, p); t.Verdict != want || t.DecidedBy != decidedBy {
		tb.Errorf("nodefwtest: node %s: verdict %s decided by %s, want %s decided by %s\n%s",
			node, t.Verdict, t.DecidedBy, want, decidedBy, FormatTrace(t))
	}
}

// FormatTrace is a trace as `nodefw trace` prints it.
func FormatTrace(t Trace) string {
	var b strings.Builder
	if err := policytest.WriteTrace(&b, t, policytest.Style{}); err != nil {
		return err.Error()
	}
	return b.String()
}

// resolvedNode waits until the node's NodeFirewall holds what the
// resolver makes of the cluster's policies and nodes as they are now,
// which is what the controller writes, and returns it.
func (e *Env) resolvedNode(tb testing.TB, name string) policytest.Node {
	tb.Helper()
	var nfw fwv1.NodeFirewall
	var labels map[string]string
	envtesting.Eventually(tb, e.timeout, func() error {
		ctx := context.Background()
		var policies fwv1.NodeFirewallPolicyList
		var nodes corev1.NodeList
		var nfws fwv1.NodeFirewallList
		for _, list := range []client.ObjectList{&policies, &nodes, &nfws} {
			if err := e.Client.List(ctx, list); err != nil {
				return err
			}
		}
		i := slices.IndexFunc(nodes.Items, func(n corev1.Node) bool { return n.Name == name })
		if i < 0 {
			return fmt.Errorf("there is no node %s: create it with CreateNode", name)
		}
		labels = nodes.Items[i].Labels
		desired := resolve.Resolve(resolve.Input{Policies: policies.Items, Nodes: nodes.Items, Current: nfws.Items, Failsafes: e.failsafes})
		if err := e.Client.Get(ctx, client.ObjectKey{Name: name}, &nfw); err != nil {
			return fmt.Errorf("the controller has not written the NodeFirewall of node %s: %w", name, err)
		}
		if want := desired.Nodes[name]; !equality.Semantic.DeepEqual(nfw.Spec, want) {
			return fmt.Errorf("the NodeFirewall of node %s does not yet hold the cluster's policies: it has %s, want %s",
				name, policyRefs(nfw.Spec), policyRefs(want))
		}
		return nil
	})
	// Peers: the contents of the sets the rules look up, once the
	// controller has written them.
	var sets compile.AddressSets
	envtesting.Eventually(tb, e.timeout, func() error {
		var err error
		sets, err = policytest.ClusterAddressSets(context.Background(), e.Client, nfw.Spec)
		if err != nil {
			return err
		}
		for _, set := range compile.AddressSetNames(nfw.Spec) {
			if _, ok := sets[set]; !ok && strings.HasPrefix(set, "nodefw-") {
				return fmt.Errorf("the controller has not written the set %s of node %s's peers", set, name)
			}
		}
		return nil
	})
	return policytest.Node{Name: name, Labels: labels, Spec: nfw.Spec, AddressSets: sets}
}

// policyRefs names a spec's policies with their generations.
func policyRefs(spec fwv1.NodeFirewallSpec) string {
	if len(spec.Policies) == 0 {
		return "no policies"
	}
	refs := make([]string, len(spec.Policies))
	for i, p := range spec.Policies {
		refs[i] = fmt.Sprintf("%s (generation %d)", p.Name, p.Generation)
	}
	return strings.Join(refs, ", ")
}
