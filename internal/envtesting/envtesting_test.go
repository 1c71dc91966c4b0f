package envtesting

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// fatalRecorder is a test that records its failure instead of failing.
type fatalRecorder struct {
	testing.TB
	fatal string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// eventually runs Eventually as a test of its own would, and returns its
// duration and failure message.
func eventually(timeout time.Duration, cond func() error) (time.Duration, string) {
	r := &fatalRecorder{}
	var took time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		took = Eventually(r, timeout, cond)
	}()
	<-done
	return took, r.fatal
}

func TestEventually(t *testing.T) {
	calls := 0
	took, fatal := eventually(time.Minute, func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if fatal != "" || calls != 3 || took < 2*pollInterval {
		t.Errorf("succeeding on the third call: %d calls in %v, failure %q; want 3 calls in at least %v and no failure", calls, took, fatal, 2*pollInterval)
	}

	_, fatal = eventually(3*pollInterval, func() error { return errors.New("never") })
	if !strings.Contains(fatal, "never") {
		t.Errorf("never succeeding: failure %q, want one naming the last error", fatal)
	}
}

// TestStartInstallsTheCRDs starts an API server and writes and reads a
// NodeFirewall in it.
func TestStartInstallsTheCRDs(t *testing.T) {
	cfg := StartForTest(t, filepath.Join("..", ".."))
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := &fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}, Spec: fwv1.NodeFirewallSpec{
		DefaultActions: fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop, Forward: fwv1.ChainPolicyAccept, Output: fwv1.ChainPolicyAccept},
	}}
	if err := c.Create(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	got, err := GetNodeFirewall(c, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	if got.UID != want.UID || got.Spec.DefaultActions != want.Spec.DefaultActions {
		t.Errorf("read back %s %+v, want %s %+v", got.UID, got.Spec.DefaultActions, want.UID, want.Spec.DefaultActions)
	}
}

func TestStartBuiltInNeedsAssets(t *testing.T) {
	t.Setenv(AssetsEnv, "")
	if _, _, err := StartBuiltIn(""); err == nil || !strings.Contains(err.Error(), AssetsEnv+" is not set") {
		t.Errorf("StartBuiltIn without assets: %v, want the variable named", err)
	}
}
