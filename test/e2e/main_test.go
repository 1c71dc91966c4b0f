// Package e2e runs the whole of nodefw on one machine — a control plane,
// the manager, and three network-namespace nodes each with its own agent
// and a pod behind it — and proves with real packets that the sample
// policies, live changes and failures do what they should. It needs root.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/testbed"
)

// prefix starts the name of every namespace the suite creates.
const prefix = "nfwe-"

// resyncPeriod is the agents' drift-repair period.
const resyncPeriod = 2 * time.Second

// The suite shares one cluster with the sample policies applied; every
// test leaves it as it found it.
var (
	cluster *testbed.Cluster
	samples []*fwv1.NodeFirewallPolicy
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: the end-to-end suite must run as root: it creates network namespaces and nftables tables (run `sudo make e2e`)")
		return 1
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "e2e: KUBEBUILDER_ASSETS is not set: run the suite with `make e2e` or `make test`, which build kube-apiserver and etcd")
		return 1
	}
	ctrllog.SetLogger(logr.Discard())
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...) }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// An interrupted run still removes its namespaces and processes.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; !ok {
			return
		}
		cancel()
		logf("interrupted: cleaning up")
		if cluster != nil {
			_ = cluster.Close()
		}
		os.Exit(1)
	}()

	start := time.Now()
	c, err := testbed.StartCluster(ctx, testbed.Options{
		Prefix:   prefix,
		RepoRoot: filepath.Join("..", ".."),
		// Empty: the suite builds the manager and the agent itself, so
		// that it never runs stale binaries.
		BinDir:       os.Getenv("NODEFW_BIN_DIR"),
		ResyncPeriod: resyncPeriod,
		Logf:         logf,
	})
	if err != nil {
		logf("starting the cluster: %v", err)
		return 1
	}
	cluster = c
	defer func() {
		if err := c.Close(); err != nil {
			logf("cleaning up: %v", err)
		}
	}()
	if samples, err = c.SamplePolicies(); err != nil {
		logf("%v", err)
		return 1
	}
	for _, p := range samples {
		if err := c.ApplyPolicy(ctx, p); err != nil {
			logf("applying %s: %v", p.Name, err)
			return 1
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	if err := c.WaitReady(wctx); err != nil {
		logf("%v\n%s", err, c.Diagnose(ctx, nil))
		return 1
	}
	logf("cluster up with the samples applied in %s", time.Since(start).Round(100*time.Millisecond))
	return m.Run()
}
