package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/clusterconfig"
)

// The suite shares one API server and one running controller.
var (
	k8sClient  client.Client
	reconciler *NodeFirewallPolicyReconciler
	testScheme = runtime.NewScheme()
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the suite with `make test`, which builds kube-apiserver and etcd")
		return 1
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	utilruntime.Must(clientgoscheme.AddToScheme(testScheme))
	utilruntime.Must(fwv1.AddToScheme(testScheme))
	// The NodeFirewallConfig test edits its CRD.
	utilruntime.Must(apiextensionsv1.AddToScheme(testScheme))

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting envtest: %v\n", err)
		return 1
	}
	defer func() { _ = env.Stop() }()

	// Many objects are written in the fan-out test: no client-side throttling.
	cfg.QPS, cfg.Burst = 2000, 4000
	k8sClient, err = client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		fmt.Fprintf(os.Stderr, "creating client: %v\n", err)
		return 1
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testScheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "creating manager: %v\n", err)
		return 1
	}
	reconciler = &NodeFirewallPolicyReconciler{
		Client:           countWrites(mgr.GetClient()),
		Recorder:         mgr.GetEventRecorder("nodefw-controller"),
		WriteConcurrency: 8,
		Config:           clusterconfig.NewTracker(clusterconfig.Defaults()),
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
	})
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
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
