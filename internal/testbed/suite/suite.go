// Package suite is the test bed as a test package uses it: one cluster
// (see testbed) with the sample policies applied, shared by the package's
// tests, each of which leaves it as it found it; and the expectations the
// tests make of it: packets that get their verdicts now, keep them for a
// while, or get them within a deadline after a change, and policies that
// report Ready. test/e2e and test/faults use it.
package suite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/testbed"
)

// Options configure a Suite.
type Options struct {
	// Name starts the suite's log lines and errors, e.g. "e2e".
	Name string
	// Prefix starts the name of every network namespace, e.g. "nfwe-".
	Prefix string
	// ResyncPeriod is the agents' drift-repair period.
	ResyncPeriod time.Duration
	// StartFirst starts the cluster before the tests run and fails the run
	// when it cannot start. Otherwise the first test that asks for it
	// (Suite.Cluster) starts it, and tests that need none run anyway.
	StartFirst bool
	// RestartWhenUnsettled restarts the manager and the agents when the
	// restored baseline does not settle within a minute, instead of failing
	// the test. After faults that leave client-go's watches backing off
	// (an API server outage of a minute), restoring is plumbing between
	// tests, not what a test asserts.
	RestartWhenUnsettled bool
}

// startWithin bounds starting the cluster: building the binaries, the
// control plane, and every agent programming its node.
const startWithin = 10 * time.Minute

// Suite is the cluster a test package's tests share.
type Suite struct {
	opts Options

	mu      sync.Mutex
	ctx     context.Context
	cluster *Cluster
	err     error
}

// New describes the suite of a test package; Main runs it.
func New(opts Options) *Suite {
	return &Suite{opts: opts, ctx: context.Background()}
}

func (s *Suite) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, s.opts.Name+": "+format+"\n", args...)
}

// Main runs the package's tests, from its TestMain, and stops the cluster
// afterwards, also when the run is interrupted.
func (s *Suite) Main(m *testing.M) int {
	ctrllog.SetLogger(logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()

	// An interrupted run still removes its namespaces and processes: a
	// start in progress is cancelled and cleans up after itself.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; !ok {
			return
		}
		cancel()
		s.logf("interrupted: cleaning up")
		s.close()
		os.Exit(1)
	}()
	defer s.close()

	if s.opts.StartFirst {
		if _, err := s.start(); err != nil {
			s.logf("starting the cluster: %v", err)
			return 1
		}
	}
	return m.Run()
}

// Cluster returns the shared cluster, starting it on first use; it fails
// the test when the cluster cannot start.
func (s *Suite) Cluster(t testing.TB) *Cluster {
	t.Helper()
	c, err := s.start()
	if err != nil {
		t.Fatalf("the %s cluster: %v", s.opts.Name, err)
	}
	return c
}

// start starts the cluster once; later calls return it, or the error of
// the first attempt.
func (s *Suite) start() (*Cluster, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cluster == nil && s.err == nil {
		s.cluster, s.err = s.startCluster(s.ctx)
	}
	return s.cluster, s.err
}

func (s *Suite) startCluster(ctx context.Context) (*Cluster, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the tests must run as root: they create network namespaces and nftables tables")
	}
	if err := envtesting.CheckAssets(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, startWithin)
	defer cancel()
	start := time.Now()
	tc, err := testbed.StartCluster(ctx, testbed.Options{
		Prefix:   s.opts.Prefix,
		RepoRoot: filepath.Join("..", ".."),
		// Empty: build the manager and the agent from this tree, so that
		// the tests never run stale binaries.
		BinDir:       os.Getenv("NODEFW_BIN_DIR"),
		ResyncPeriod: s.opts.ResyncPeriod,
		Logf:         s.logf,
	})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Cluster, error) {
		_ = tc.Close()
		return nil, err
	}
	c := &Cluster{Cluster: tc, restartWhenUnsettled: s.opts.RestartWhenUnsettled}
	if c.Samples, err = tc.SamplePolicies(); err != nil {
		return fail(err)
	}
	for _, p := range c.Samples {
		if err := tc.ApplyPolicy(ctx, p); err != nil {
			return fail(fmt.Errorf("applying %s: %w", p.Name, err))
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	if err := tc.WaitReady(wctx); err != nil {
		return fail(fmt.Errorf("%w\n%s", err, tc.Diagnose(ctx, nil)))
	}
	s.logf("cluster up with the samples applied in %s", time.Since(start).Round(100*time.Millisecond))
	return c, nil
}

// close stops the cluster, if it runs.
func (s *Suite) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cluster != nil {
		if err := s.cluster.Close(); err != nil {
			s.logf("cleaning up: %v", err)
		}
		s.cluster = nil
	}
}
