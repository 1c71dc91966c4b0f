// Package envtesting starts a throwaway API server for tests (envtest's
// kube-apiserver and etcd from KUBEBUILDER_ASSETS) with nodefw's CRDs
// installed, and holds the small helpers that tests against one share.
package envtesting

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/config/crd"
)

// AssetsEnv names the variable that points at the directory holding
// kube-apiserver and etcd.
const AssetsEnv = "KUBEBUILDER_ASSETS"

// Scheme knows the built-in types and nodefw's.
var Scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(Scheme))
	utilruntime.Must(fwv1.AddToScheme(Scheme))
}

// CheckAssets says how to get kube-apiserver and etcd when
// KUBEBUILDER_ASSETS is not set.
func CheckAssets() error {
	if os.Getenv(AssetsEnv) == "" {
		return errors.New(AssetsEnv + " is not set: run the tests with `make test`, which builds kube-apiserver and etcd, " +
			"or set it to the directory that hack/envtest-assets.sh prints")
	}
	return nil
}

// CRDDir is the directory of the generated CRDs, config/crd/bases, in the
// repository whose root is repoRoot.
func CRDDir(repoRoot string) string { return filepath.Join(repoRoot, "config", "crd", "bases") }

// Environment is an envtest environment that installs the CRDs in crdDir
// and fails to start without them.
func Environment(crdDir string) *envtest.Environment {
	return &envtest.Environment{CRDDirectoryPaths: []string{crdDir}, ErrorIfCRDPathMissing: true}
}

// Start starts an API server with the CRDs of the repository whose root is
// repoRoot. The caller must Stop the environment.
func Start(repoRoot string) (*envtest.Environment, *rest.Config, error) {
	if err := CheckAssets(); err != nil {
		return nil, nil, err
	}
	env := Environment(CRDDir(repoRoot))
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("starting envtest with %s=%s: %w", AssetsEnv, os.Getenv(AssetsEnv), err)
	}
	return env, cfg, nil
}

// StartBuiltIn starts an API server with the CRDs built into the program
// (package config/crd), wherever it runs, with kube-apiserver and etcd
// from assetsDir, or from KUBEBUILDER_ASSETS when it is "". The caller must
// Stop the environment.
func StartBuiltIn(assetsDir string) (*envtest.Environment, *rest.Config, error) {
	if assetsDir == "" {
		if err := CheckAssets(); err != nil {
			return nil, nil, err
		}
		assetsDir = os.Getenv(AssetsEnv)
	}
	crds, err := crd.Definitions()
	if err != nil {
		return nil, nil, err
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assetsDir, CRDInstallOptions: envtest.CRDInstallOptions{CRDs: crds}}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("starting envtest with kube-apiserver and etcd from %s: %w", assetsDir, err)
	}
	return env, cfg, nil
}

// StartForTest is Start for one test: it fails the test when the API server
// does not start, and stops it when the test ends.
func StartForTest(tb testing.TB, repoRoot string) *rest.Config {
	tb.Helper()
	env, cfg, err := Start(repoRoot)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := env.Stop(); err != nil {
			tb.Logf("stopping envtest: %v", err)
		}
	})
	return cfg
}

// NewClient is a client of cfg that knows Scheme.
func NewClient(cfg *rest.Config) (client.Client, error) {
	return client.New(cfg, client.Options{Scheme: Scheme})
}

// pollInterval is how often Eventually calls its condition.
const pollInterval = 100 * time.Millisecond

// Eventually calls cond until it returns nil and returns how long that
// took. When timeout passes first, it fails the test with cond's last
// error.
func Eventually(tb testing.TB, timeout time.Duration, cond func() error) time.Duration {
	tb.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			tb.Fatalf("not within %v: %v", timeout, err)
		}
		time.Sleep(pollInterval)
	}
}

// GetNodeFirewall reads the NodeFirewall called name.
func GetNodeFirewall(c client.Client, name string) (*fwv1.NodeFirewall, error) {
	nfw := &fwv1.NodeFirewall{}
	return nfw, c.Get(context.Background(), client.ObjectKey{Name: name}, nfw)
}
