package cluster

import (
	"context"
	"fmt"
	"k8s.io/apimachinery/pkg/util/wait"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/localcluster"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// Capability sets as /proc/PID/status prints them.
const (
	capNone     = "0000000000000000"
	capNetAdmin = "0000000000001000" // 1 << CAP_NET_ADMIN (12)
)

// agentUser is the agent's service account, as config/default names it.
const agentUser = "system:serviceaccount:" + localcluster.AgentNamespace + ":nodefw-agent"

// checkAgents checks every node's agent as the kernel sees it: NET_ADMIN
// and nothing else in every capability set, no privilege escalation, the
// runtime's seccomp filter, a read-only root, the node's network.
func checkAgents(t *testing.T, ctx context.Context, c *localcluster.Cluster) {
	pods := podsByNode(t, ctx, c, localcluster.AgentNamespace, "agent")
	for _, n := range c.Nodes {
		pod, ok := pods[n.Name]
		if !ok {
			t.Errorf("%s: no agent pod", n.Name)
			continue
		}
		if !podReady(pod) {
			t.Errorf("%s: agent pod %s not Ready", n.Name, pod.Name)
		}
		sc := pod.Spec.Containers[0].SecurityContext
		if sc == nil || sc.Privileged == nil || *sc.Privileged || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) ||
			ptr.Deref(sc.AllowPrivilegeEscalation, true) || sc.Capabilities == nil ||
			!cmp.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN"}) || !cmp.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s: agent pod %s security context %+v, want unprivileged, read-only root, NET_ADMIN only", n.Name, pod.Name, sc)
		}
		pid, err := localcluster.FindProcess("/agent", "NODE_NAME="+n.Name)
		if err != nil {
			t.Error(err)
			continue
		}
		checkProcess(t, fmt.Sprintf("%s: agent (pid %d)", n.Name, pid), pid, map[string]string{
			"CapInh": capNone, "CapPrm": capNetAdmin, "CapEff": capNetAdmin, "CapBnd": capNetAdmin, "CapAmb": capNone,
			"NoNewPrivs": "1", "Seccomp": "2", "Uid": "0\t0\t0\t0",
		})
		if same, err := sameNetns(pid, n.NetnsPath()); err != nil || !same {
			t.Errorf("%s: agent (pid %d) is not in the node's network namespace (%v)", n.Name, pid, err)
		}
	}
}

// checkManager checks the manager's namespace enforces the restricted Pod
// Security level (a privileged pod is refused there) and that the manager
// runs under it: no capabilities, not root, read-only root.
func checkManager(t *testing.T, ctx context.Context, c *localcluster.Cluster) {
	var ns corev1.Namespace
	if err := c.Client.Get(ctx, client.ObjectKey{Name: localcluster.ManagerNamespace}, &ns); err != nil {
		t.Fatal(err)
	}
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Errorf("namespace %s enforces Pod Security %q, want restricted", ns.Name, got)
	}
	privileged := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: localcluster.ManagerNamespace, Name: "privileged-probe"},
		Spec: corev1.PodSpec{
			HostNetwork: true,
			Containers:  []corev1.Container{{Name: "c", Image: localcluster.TestServerImage.Ref}},
		},
	}
	err := c.Client.Create(ctx, privileged, client.DryRunAll)
	if err == nil || !strings.Contains(err.Error(), `violates PodSecurity "restricted:latest"`) {
		t.Errorf("a host-network pod in %s: %v, want refused by Pod Security restricted", ns.Name, err)
	}

	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods, client.InNamespace(localcluster.ManagerNamespace)); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 || !podReady(&pods.Items[0]) {
		t.Fatalf("want one Ready manager pod in %s, got %d", ns.Name, len(pods.Items))
	}
	pod := pods.Items[0]
	pid, err := localcluster.FindProcess("/manager", "HOSTNAME="+pod.Name)
	if err != nil {
		t.Fatal(err)
	}
	checkProcess(t, fmt.Sprintf("manager (pid %d)", pid), pid, map[string]string{
		"CapInh": capNone, "CapPrm": capNone, "CapEff": capNone, "CapBnd": capNone, "CapAmb": capNone,
		"NoNewPrivs": "1", "Seccomp": "2", "Uid": "65532\t65532\t65532\t65532",
	})
}

// checkProcess compares fields of /proc/PID/status and checks that the
// process's root filesystem is mounted read-only.
func checkProcess(t *testing.T, what string, pid int, want map[string]string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			if _, wanted := want[k]; wanted {
				got[k] = strings.TrimSpace(v)
			}
		}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("%s: /proc/PID/status (-want +got):\n%s", what, d)
	}
	mounts, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "mountinfo"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ...
		if len(f) > 5 && f[4] == "/" {
			if !strings.Contains(","+f[5]+",", ",ro,") {
				t.Errorf("%s: root filesystem mounted %s, want ro", what, f[5])
			}
			return
		}
	}
	t.Errorf("%s: no root mount in mountinfo", what)
}

func sameNetns(pid int, netns string) (bool, error) {
	a, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid), "ns", "net"))
	if err != nil {
		return false, err
	}
	b, err := os.Stat(netns)
	if err != nil {
		return false, err
	}
	return os.SameFile(a, b), nil
}

// checkAdmission writes NodeFirewalls with each agent's own service
// account token, read from the kubelet's volume of the agent pod: the
// admission policy lets an agent write its own node's status and refuses
// another node's, and its own spec. Writes are dry runs: admission runs,
// nothing is stored.
func checkAdmission(t *testing.T, ctx context.Context, c *localcluster.Cluster) {
	pods := podsByNode(t, ctx, c, localcluster.AgentNamespace, "agent")
	for _, n := range c.Nodes {
		other := c.Nodes[0]
		if other == n {
			other = c.Nodes[1]
		}
		pod := pods[n.Name]
		if pod == nil {
			t.Fatalf("%s: no agent pod", n.Name)
		}
		tokens, _ := filepath.Glob(filepath.Join(n.KubeletRoot, "pods", string(pod.UID), "volumes", "kubernetes.io~projected", "*", "token"))
		if len(tokens) != 1 {
			t.Fatalf("%s: want the agent pod's one projected token, found %v", n.Name, tokens)
		}
		token, err := os.ReadFile(tokens[0])
		if err != nil {
			t.Fatal(err)
		}
		cfg := rest.AnonymousClientConfig(c.Config)
		cfg.BearerToken = string(token)
		agent, err := client.New(cfg, client.Options{Scheme: localcluster.Scheme})
		if err != nil {
			t.Fatal(err)
		}

		// The token is the agent's, bound to its node.
		review := &authenticationv1.SelfSubjectReview{}
		if err := agent.Create(ctx, review); err != nil {
			t.Fatalf("%s: SelfSubjectReview with the agent's token: %v", n.Name, err)
		}
		ui := review.Status.UserInfo
		if ui.Username != agentUser || !cmp.Equal([]string(ui.Extra["authentication.kubernetes.io/node-name"]), []string{n.Name}) {
			t.Errorf("%s: the agent's token is %s with node %v, want %s with node %s",
				n.Name, ui.Username, ui.Extra["authentication.kubernetes.io/node-name"], agentUser, n.Name)
		}

		// Its own node's status: allowed.
		own := getNodeFirewall(t, ctx, agent, n.Name)
		own.Status.LastError = "admission check"
		if err := agent.Status().Update(ctx, own, client.DryRunAll); err != nil {
			t.Errorf("%s: the agent writing its own NodeFirewall's status: %v, want allowed", n.Name, err)
		}
		// Another node's status: refused by the policy.
		theirs := getNodeFirewall(t, ctx, agent, other.Name)
		theirs.Status.LastError = "admission check"
		err = agent.Status().Update(ctx, theirs, client.DryRunAll)
		wantMsg := fmt.Sprintf("may only write NodeFirewall %s, not %s", n.Name, other.Name)
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), wantMsg) {
			t.Errorf("%s: the agent writing %s's NodeFirewall status: %v, want forbidden (%q)", n.Name, other.Name, err, wantMsg)
		}
		// Its own spec: refused.
		own = getNodeFirewall(t, ctx, agent, n.Name)
		patch := client.MergeFrom(own.DeepCopy())
		// (The controller names the policies' revisions and writes no
		// rules of its own: the agent adds one.)
		own.Spec.Rules = append(own.Spec.Rules, fwv1.NodeFirewallRule{Policy: "agent", Name: "open", Chain: fwv1.ChainInput, Action: fwv1.ActionAccept})
		err = agent.Patch(ctx, own, patch, client.DryRunAll)
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "may not change a NodeFirewall's spec") {
			t.Errorf("%s: the agent adding a rule to its own NodeFirewall: %v, want forbidden", n.Name, err)
		}
	}
}

func getNodeFirewall(t *testing.T, ctx context.Context, c client.Client, name string) *fwv1.NodeFirewall {
	t.Helper()
	var nfw fwv1.NodeFirewall
	if err := c.Get(ctx, client.ObjectKey{Name: name}, &nfw); err != nil {
		t.Fatalf("getting NodeFirewall %s: %v", name, err)
	}
	return &nfw
}

func podsByNode(t *testing.T, ctx context.Context, c *localcluster.Cluster, namespace, component string) map[string]*corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods, client.InNamespace(namespace),
		client.MatchingLabels{"app.kubernetes.io/component": component}); err != nil {
		t.Fatal(err)
	}
	out := map[string]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil {
			out[p.Spec.NodeName] = p
		}
	}
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// samplePolicies are the samples the suite applies: the control-plane and
// the worker policies. (strict-output is an Audit-mode policy with a
// placeholder address.)
var samplePolicies = []string{
	"firewall_v1alpha1_nodefirewallpolicy_control_plane.yaml",
	"firewall_v1alpha1_nodefirewallpolicy_worker.yaml",
}

func loadSample(t *testing.T, file string) *fwv1.NodeFirewallPolicy {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "config", "samples", file))
	if err != nil {
		t.Fatal(err)
	}
	var p fwv1.NodeFirewallPolicy
	if err := yaml.UnmarshalStrict(raw, &p); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return &p
}

// applySamples creates the sample policies and waits until every node has
// programmed them.
func applySamples(t *testing.T, ctx context.Context, c *localcluster.Cluster) {
	t.Helper()
	for _, f := range samplePolicies {
		if err := c.Client.Create(ctx, loadSample(t, f)); err != nil {
			t.Fatal(err)
		}
	}
	waitPoliciesReady(t, ctx, c)
}

// waitPoliciesReady waits until every policy is Ready at its generation
// with every matched node applied, and every NodeFirewall is Ready at its
// generation.
func waitPoliciesReady(t *testing.T, ctx context.Context, c *localcluster.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var pending []string
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(context.Context) (bool, error) {
		pending = nil
		var policies fwv1.NodeFirewallPolicyList
		if err := c.Client.List(ctx, &policies); err != nil {
			return false, err
		}
		for _, p := range policies.Items {
			ready := meta.FindStatusCondition(p.Status.Conditions, fwv1.ConditionReady)
			if ready == nil || ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != p.Generation ||
				p.Status.ObservedGeneration != p.Generation || p.Status.AppliedNodes != p.Status.MatchedNodes || p.Status.FailedNodes != 0 {
				pending = append(pending, "policy "+p.Name)
			}
		}
		var nfws fwv1.NodeFirewallList
		if err := c.Client.List(ctx, &nfws); err != nil {
			return false, err
		}
		for _, nfw := range nfws.Items {
			if !nodeFirewallReady(&nfw) {
				pending = append(pending, "NodeFirewall "+nfw.Name)
			}
		}
		return len(pending) == 0, nil
	})
	if err != nil {
		t.Fatalf("not ready: %s: %v", strings.Join(pending, ", "), err)
	}
}

func nodeFirewallReady(nfw *fwv1.NodeFirewall) bool {
	ready := meta.FindStatusCondition(nfw.Status.Conditions, fwv1.ConditionReady)
	return ready != nil && ready.Status == metav1.ConditionTrue && ready.ObservedGeneration == nfw.Generation &&
		nfw.Status.ObservedGeneration == nfw.Generation
}

// deletePolicies deletes every policy and waits until every node has
// programmed its NodeFirewall's new, empty, generation.
func deletePolicies(t *testing.T, ctx context.Context, c *localcluster.Cluster) {
	t.Helper()
	var before fwv1.NodeFirewallList
	if err := c.Client.List(ctx, &before); err != nil {
		t.Fatal(err)
	}
	generation := map[string]int64{}
	for _, nfw := range before.Items {
		generation[nfw.Name] = nfw.Generation
	}
	if err := c.Client.DeleteAllOf(ctx, &fwv1.NodeFirewallPolicy{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(context.Context) (bool, error) {
		var nfws fwv1.NodeFirewallList
		if err := c.Client.List(ctx, &nfws); err != nil {
			return false, err
		}
		for _, nfw := range nfws.Items {
			if nfw.Generation <= generation[nfw.Name] || !nodeFirewallReady(&nfw) || len(nfw.Spec.Rules) != 0 {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("NodeFirewalls not emptied after deleting the policies: %v", err)
	}
}

// checkWithoutVXLAN is the negative control for the flannel-vxlan rule:
// without it the worker drops the VXLAN packets that carry pod traffic
// from the other node, so every pod-to-pod connection between the nodes
// fails, and so does every NodePort whose backend is on the other node,
// while NodePorts served by a pod on the same node still work. With the
// rule back, everything works again.
func checkWithoutVXLAN(t *testing.T, ctx context.Context, c *localcluster.Cluster, w *workload) {
	worker := loadSample(t, "firewall_v1alpha1_nodefirewallpolicy_worker.yaml")
	update := func(mutate func(*fwv1.NodeFirewallPolicy)) {
		t.Helper()
		for {
			var p fwv1.NodeFirewallPolicy
			if err := c.Client.Get(ctx, client.ObjectKey{Name: worker.Name}, &p); err != nil {
				t.Fatal(err)
			}
			mutate(&p)
			err := c.Client.Update(ctx, &p)
			if err == nil {
				break
			}
			if !apierrors.IsConflict(err) {
				t.Fatal(err)
			}
		}
		waitPoliciesReady(t, ctx, c)
	}

	update(func(p *fwv1.NodeFirewallPolicy) {
		var kept []fwv1.Rule
		for _, r := range p.Spec.Rules {
			if r.Name != "flannel-vxlan" {
				kept = append(kept, r)
			}
		}
		if len(kept) == len(p.Spec.Rules) {
			t.Fatalf("the worker sample has no flannel-vxlan rule")
		}
		p.Spec.Rules = kept
	})
	expect(t, "pod to pod without flannel-vxlan", w.podProbes(netnstest.Dropped)...)
	var nodePorts []probe
	for _, p := range w.nodePortProbes(netnstest.Accepted) {
		if !p.local {
			p.want = netnstest.Dropped
		}
		nodePorts = append(nodePorts, p)
	}
	expect(t, "NodePorts without flannel-vxlan", nodePorts...)

	update(func(p *fwv1.NodeFirewallPolicy) { p.Spec = worker.Spec })
	expect(t, "pod to pod with flannel-vxlan back", w.podProbes(netnstest.Accepted)...)
	expect(t, "NodePorts with flannel-vxlan back", w.nodePortProbes(netnstest.Accepted)...)
}

// waitNamespacesGone waits until nodefw's namespaces are deleted, so that
// the next install can create them again.
func waitNamespacesGone(t *testing.T, ctx context.Context, c *localcluster.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, name := range []string{localcluster.ManagerNamespace, localcluster.AgentNamespace} {
		err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(context.Context) (bool, error) {
			err := c.Client.Get(ctx, client.ObjectKey{Name: name}, &corev1.Namespace{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return false, err
		})
		if err != nil {
			t.Fatalf("namespace %s not deleted: %v", name, err)
		}
	}
}
