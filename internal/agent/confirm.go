package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Confirmer tells whether the node can still reach its control plane. After
// programming a new ruleset the agent asks it, and reverts to the previous
// ruleset when the answer turns from yes to no ("commit confirmed").
type Confirmer interface {
	Reachable(ctx context.Context) bool
}

// confirmDialTimeout bounds one attempt of TCPConfirmer.
const confirmDialTimeout = time.Second

// TCPConfirmer dials Endpoint (host:port, usually the API server) from the
// network namespace the agent programs.
type TCPConfirmer struct {
	Endpoint string
	// NetnsPath is the namespace to dial from; "" means the agent's own.
	NetnsPath string
}

// Reachable reports whether a TCP connection to Endpoint succeeds within
// confirmDialTimeout.
func (c *TCPConfirmer) Reachable(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, confirmDialTimeout)
	defer cancel()
	conn, err := dialIn(ctx, c.NetnsPath, c.Endpoint)
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// dialIn connects to addr from the network namespace at nsPath. The socket is
// created on a thread switched into that namespace; the thread switches
// back before it is released, or is discarded if it cannot.
func dialIn(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	if nsPath == "" {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("entering %s: %w", nsPath, err)}
			return
		}
		var d net.Dialer
		conn, derr := d.DialContext(ctx, "tcp", addr)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: Go discards it when the goroutine ends.
			ch <- result{conn: conn, err: derr}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{conn: conn, err: derr}
	}()
	r := <-ch
	return r.conn, r.err
}
