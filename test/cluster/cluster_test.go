// Package cluster is the real-cluster suite (`make e2e-cluster`): it brings
// up the local cluster of internal/localcluster (real kubelets, containerd,
// kube-proxy in nftables and iptables mode, flannel VXLAN), deploys nodefw
// from config/default and then from the Helm chart, and checks each
// install the same way: the agents' privileges as the kernel sees them,
// the manager's Pod Security level, the admission policy against an
// agent's real service-account token, the sample policies against real
// NodePort, pod-to-pod and host traffic, a NodePort restriction in
// PreRouting through both kube-proxy modes, kube-proxy's and flannel's tables
// left untouched, and removal leaving no nodefw table.
//
// It needs root and the binaries of hack/cluster/build.sh; a missing
// prerequisite fails the suite with what to do.
package cluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nodefw/nodefw/internal/localcluster"
	"github.com/nodefw/nodefw/internal/netnstest"
)

var repoRoot = filepath.Join("..", "..")

func init() {
	// The clients log through controller-runtime, which otherwise warns
	// with a stack trace that no logger was set.
	log.SetLogger(logr.Discard())
}

// install is one way of deploying nodefw.
type install struct {
	name    string
	objects func(repoRoot string) ([]*unstructured.Unstructured, error)
	// uninstall removes nodefw as its users would.
	uninstall func(t *testing.T, ctx context.Context, c *localcluster.Cluster, objs []*unstructured.Unstructured)
}

var installs = []install{
	{name: "kustomize", objects: localcluster.KustomizeObjects, uninstall: makeUndeploy},
	{name: "helm", objects: localcluster.HelmObjects, uninstall: helmUninstall},
}

func TestRealCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := localcluster.Up(ctx, localcluster.Options{RepoRoot: repoRoot, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(diagnose(c))
		}
		if err := c.Down(); err != nil {
			t.Errorf("removing the cluster: %v", err)
		}
	})
	t.Logf("cluster up in %s", time.Since(start).Round(time.Second))

	w := startWorkload(t, ctx, c)
	// Without nodefw every port of the workload answers: what the
	// policies drop later is nodefw's doing.
	expect(t, "without nodefw", w.unlistedProbes(netnstest.Accepted)...)
	expect(t, "without nodefw", w.listedProbes()...)
	pristine := snapshotTables(t, ctx, c)

	for _, in := range installs {
		if !t.Run(in.name, func(t *testing.T) { checkInstall(t, ctx, c, w, pristine, in) }) {
			// A failed removal leaves what the next install would trip over.
			break
		}
	}
}

// checkInstall deploys nodefw one way and checks it end to end.
func checkInstall(t *testing.T, ctx context.Context, c *localcluster.Cluster, w *workload, pristine map[string]string, in install) {
	objs, err := in.objects(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitNodefwReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("nodefw ready after %s", time.Since(start).Round(100*time.Millisecond))

	t.Run("agent", func(t *testing.T) { checkAgents(t, ctx, c) })
	t.Run("manager", func(t *testing.T) { checkManager(t, ctx, c) })

	// kube-proxy's and flannel's tables as they are with nodefw running
	// but no policy yet; they must not change while policies come and go.
	// (Deploying nodefw adds its metrics Service to kube-proxy's tables.)
	deployed := snapshotTables(t, ctx, c)

	applySamples(t, ctx, c)
	t.Run("admission", func(t *testing.T) { checkAdmission(t, ctx, c) })
	t.Run("traffic", func(t *testing.T) {
		expect(t, "NodePorts with the sample policies", w.nodePortProbes(netnstest.Accepted)...)
		expect(t, "pod to pod with the sample policies", w.podProbes(netnstest.Accepted)...)
		expect(t, "listed ports with the sample policies", w.listedProbes()...)
		expect(t, "unlisted ports with the sample policies", w.unlistedProbes(netnstest.Dropped)...)
		for _, n := range c.Nodes {
			if ok, err := hasNodefwTable(ctx, n); err != nil || !ok {
				t.Errorf("%s: no table inet nodefw with the sample policies (%v)", n.Name, err)
			}
		}
	})
	t.Run("tables-untouched", func(t *testing.T) { compareTables(t, deployed, snapshotTables(t, ctx, c)) })
	t.Run("without-flannel-vxlan", func(t *testing.T) { checkWithoutVXLAN(t, ctx, c, w) })
	t.Run("nodeports-from-cidr", func(t *testing.T) { checkNodePortRestriction(t, ctx, c, w) })

	deletePolicies(t, ctx, c)
	t.Run("policies-removed", func(t *testing.T) {
		expect(t, "unlisted ports without policies", w.unlistedProbes(netnstest.Accepted)...)
		compareTables(t, deployed, snapshotTables(t, ctx, c))
	})

	in.uninstall(t, ctx, c, objs)
	t.Run("removed", func(t *testing.T) {
		for _, n := range c.Nodes {
			if ok, err := hasNodefwTable(ctx, n); err != nil || ok {
				t.Errorf("%s: table inet nodefw left after removing nodefw (%v)", n.Name, err)
			}
		}
		// Removing nodefw removed its metrics Service, whose chains
		// kube-proxy deletes at a later sync (over 20 s on a loaded
		// machine).
		eventuallySameTables(t, ctx, c, pristine, time.Minute)
		expect(t, "after removing nodefw", w.unlistedProbes(netnstest.Accepted)...)
		expect(t, "after removing nodefw", w.nodePortProbes(netnstest.Accepted)...)
	})
}

// makeUndeploy runs `make undeploy` with the cluster's kubectl.
func makeUndeploy(t *testing.T, ctx context.Context, c *localcluster.Cluster, _ []*unstructured.Unstructured) {
	t.Helper()
	kubectl := filepath.Join(repoRoot, "bin", "cluster", "bin", "kubectl")
	abs, err := filepath.Abs(kubectl)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "undeploy", "KUBECTL="+abs+" --kubeconfig "+c.Kubeconfig)
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make undeploy: %v\n%s", err, out)
	}
	t.Logf("make undeploy:\n%s", strings.TrimSpace(string(out)))
	waitNamespacesGone(t, ctx, c)
}

// helmUninstall does what `helm uninstall` does after the policies are
// gone: deletes the release's objects but the CRDs the chart keeps; like
// `make undeploy`, the manager is stopped and the NodeFirewalls are deleted
// first, so that every agent removes its table.
func helmUninstall(t *testing.T, ctx context.Context, c *localcluster.Cluster, objs []*unstructured.Unstructured) {
	t.Helper()
	if err := c.Uninstall(ctx, objs, true); err != nil {
		t.Fatal(err)
	}
	waitNamespacesGone(t, ctx, c)
}

func diagnose(c *localcluster.Cluster) string {
	var b strings.Builder
	b.WriteString("diagnostics:\n")
	for _, name := range []string{"kube-apiserver", "kube-controller-manager"} {
		b.WriteString("--- " + name + "\n" + localcluster.LogTail(name, 15) + "\n")
	}
	for _, n := range c.Nodes {
		for _, d := range []string{"kubelet", "containerd", "kube-proxy", "flanneld"} {
			b.WriteString("--- " + n.Name + " " + d + "\n" + localcluster.LogTail(n.Name+"-"+d, 10) + "\n")
		}
		if out, err := n.Exec(context.Background(), "nft", "list", "table", "inet", "nodefw"); err == nil {
			b.WriteString("--- " + n.Name + " table inet nodefw\n" + out)
		}
	}
	if out, err := exec.Command(filepath.Join(repoRoot, "bin", "cluster", "bin", "kubectl"), "--kubeconfig", c.Kubeconfig,
		"get", "nodes,pods,nfp,nfw", "-A", "-o", "wide").CombinedOutput(); err == nil {
		b.WriteString("--- kubectl get nodes,pods,nfp,nfw -A\n" + string(out))
	}
	_ = os.Stdout.Sync()
	return b.String()
}
