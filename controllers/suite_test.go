package controllers

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/envtesting"
)

// The suite shares one API server and one running controller.
var (
	k8sClient  client.Client
	reconciler *NodeFirewallPolicyReconciler
	// restConfig reaches the suite's API server.
	restConfig *rest.Config
)

const (
	// revisionNamespace holds the policies' revisions, as the controller's
	// namespace does in a cluster.
	revisionNamespace = "nodefw-system"
	// suiteRequestLimit is the largest NodeFirewall the suite's controller
	// writes: low enough that a test reaches it with a few dozen policies
	// now that a NodeFirewall names their revisions instead of copying
	// their rules.
	suiteRequestLimit = 16 * 1024
	// suiteRevisionLimit is the largest revision the suite's controller
	// writes: above the fan-out test's 500-rule policy (about 60 KiB).
	suiteRevisionLimit = 256 * 1024
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	env, cfg, err := envtesting.Start("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	restConfig = cfg

	// The tests' own client writes many objects in the fan-out test: no
	// client-side throttling for it.
	testCfg := rest.CopyConfig(cfg)
	testCfg.QPS, testCfg.Burst = 2000, 4000
	k8sClient, err = envtesting.NewClient(testCfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "creating client: %v\n", err)
		return 1
	}
	// The controller runs with the manager's defaults, and every byte it
	// sends is counted.
	mgrCfg := rest.CopyConfig(cfg)
	mgrCfg.QPS, mgrCfg.Burst = DefaultKubeAPIQPS, DefaultKubeAPIBurst
	mgrCfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{next: rt} })
	mgr, err := ctrl.NewManager(mgrCfg, ctrl.Options{
		Scheme:                 envtesting.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Watch events can be held back, to reproduce a lagging cache.
		Cache: cache.Options{NewInformer: heldEvents.newInformer},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "creating manager: %v\n", err)
		return 1
	}
	ns := &corev1.Namespace{}
	ns.Name = revisionNamespace
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		fmt.Fprintf(os.Stderr, "creating namespace %s: %v\n", revisionNamespace, err)
		return 1
	}
	shards := &AddressSetShardReconciler{
		Client:           countWrites(mgr.GetClient()),
		APIReader:        mgr.GetAPIReader(),
		Namespace:        revisionNamespace,
		WriteConcurrency: DefaultWriteConcurrency,
	}
	if err := shards.SetupWithManager(mgr); err != nil {
		fmt.Fprintf(os.Stderr, "setting up the shard controller: %v\n", err)
		return 1
	}
	reconciler = &NodeFirewallPolicyReconciler{
		Client:            countWrites(mgr.GetClient()),
		Recorder:          mgr.GetEventRecorder("nodefw-controller"),
		WriteConcurrency:  DefaultWriteConcurrency,
		Config:            clusterconfig.NewTracker(clusterconfig.Defaults()),
		RequestLimit:      suiteRequestLimit,
		RevisionLimit:     suiteRevisionLimit,
		RevisionNamespace: revisionNamespace,
		APIReader:         mgr.GetAPIReader(),
		Shards:            shards,
		// Long, so that a missed event shows as a test failure rather than
		// being repaired by the safety net.
		PeriodicResolve: 10 * time.Minute,
	}
	if err := reconciler.SetupWithManager(mgr); err != nil {
		fmt.Fprintf(os.Stderr, "setting up controller: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "manager: %v\n", err)
		}
	}()
	return m.Run()
}

func zapLevel() zapcore.Level {
	if os.Getenv("NODEFW_TEST_VERBOSE") != "" {
		return -1
	}
	return 1
}

// controllerWrites counts the controller's API writes by kind and verb.
var controllerWrites sync.Map // "Kind/verb" -> *atomic.Int64

func countWrite(obj client.Object, verb string) {
	kind := fmt.Sprintf("%T", obj)
	v, _ := controllerWrites.LoadOrStore(kind+"/"+verb, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func writesSnapshot() map[string]int64 {
	out := map[string]int64{}
	controllerWrites.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

// noWatch adapts the manager's cached client to the interceptor, which
// wants a watching client; the controller never watches through it.
type noWatch struct{ client.Client }

func (noWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, fmt.Errorf("watch is not supported")
}

func countWrites(c client.Client) client.Client {
	return interceptor.NewClient(noWatch{c}, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			countWrite(obj, "create")
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			countWrite(obj, "update")
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			countWrite(obj, "patch")
			return c.Patch(ctx, obj, patch, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			countWrite(obj, "delete")
			return c.Delete(ctx, obj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			countWrite(obj, sub+"-update")
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			countWrite(obj, sub+"-patch")
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	})
}

// newNode creates a Node and removes it, and its NodeFirewall, at the end.
func newNode(t *testing.T, name string, labels map[string]string) *corev1.Node {
	t.Helper()
	n := &corev1.Node{}
	n.Name, n.Labels = name, labels
	if err := k8sClient.Create(context.Background(), n); err != nil {
		t.Fatalf("creating node %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = k8sClient.Delete(context.Background(), n)
	})
	return n
}

func newPolicy(t *testing.T, p *fwv1.NodeFirewallPolicy) *fwv1.NodeFirewallPolicy {
	t.Helper()
	if err := k8sClient.Create(context.Background(), p); err != nil {
		t.Fatalf("creating policy %s: %v", p.Name, err)
	}
	t.Cleanup(func() {
		_ = k8sClient.Delete(context.Background(), p)
	})
	return p
}
