// Package netnstest creates throwaway network namespaces, wires them
// together with veth pairs and sends real packets between them, so that
// privileged tests (and demos) can check what a firewall actually does.
//
// Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the ip
// command from iproute2. The names of the namespaces that Create and NewNS
// make start with Prefix, so a namespace leaked by a crashed test is easy
// to recognise; CreateExact serves callers with a naming scheme of their
// own.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace this package creates.
const Prefix = "nfwt-"

// NetnsDir is where `ip netns` keeps its namespace files.
const NetnsDir = "/run/netns"

// SkipReason is the reason tests are skipped when not run as root.
const SkipReason = "needs root for network namespaces"

// RequireRoot skips the test unless it runs as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip(SkipReason)
	}
}

// NS is a named network namespace created with `ip netns add`.
type NS struct {
	name string
	tb   testing.TB

	mu      sync.Mutex
	closers []io.Closer
	closed  bool
}

// createMu serialises `ip netns add`: concurrent first calls race while
// setting up the shared mount of the namespace directory.
var createMu sync.Mutex

// Create creates the namespace Prefix+name (name is used as is when it
// already starts with Prefix) with its loopback up and IPv6 duplicate
// address detection off. The caller must Close it.
func Create(name string) (*NS, error) {
	if !strings.HasPrefix(name, Prefix) {
		name = Prefix + name
	}
	if name == Prefix {
		return nil, fmt.Errorf("netnstest: invalid namespace name %q", name)
	}
	return CreateExact(name)
}

// CreateExact is Create without the prefix: it creates the namespace
// called exactly name, for callers that name their namespaces themselves.
// The caller must Close it.
func CreateExact(name string) (*NS, error) {
	if name == "" || strings.ContainsAny(name, "/ \t\n") {
		return nil, fmt.Errorf("netnstest: invalid namespace name %q", name)
	}
	createMu.Lock()
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	createMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	ns := &NS{name: name}
	if err := ns.setup(); err != nil {
		_ = ns.Close()
		return nil, err
	}
	return ns, nil
}

func (n *NS) setup() error {
	if err := n.ip("link", "set", "lo", "up"); err != nil {
		return err
	}
	// Addresses are usable at once: no duplicate address detection.
	return n.Do(func() error {
		for _, p := range []string{"all", "default"} {
			if err := writeSysctl("net/ipv6/conf/"+p+"/accept_dad", "0"); err != nil {
				return err
			}
		}
		return nil
	})
}

// NewNS creates a namespace for a test, named Prefix+name plus a random
// suffix so parallel tests and packages never collide, and deletes it when
// the test ends. It skips the test when not run as root.
func NewNS(tb testing.TB, name string) *NS {
	tb.Helper()
	RequireRoot(tb)
	if name == "" {
		name = "ns"
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	ns, err := Create(Prefix + strings.TrimPrefix(name, Prefix) + "-" + hex.EncodeToString(b[:]))
	if err != nil {
		tb.Fatal(err)
	}
	ns.tb = tb
	tb.Cleanup(func() {
		if err := ns.Close(); err != nil {
			tb.Errorf("closing namespace: %v", err)
		}
	})
	return ns
}

// Name is the namespace's name, as `ip netns` knows it.
func (n *NS) Name() string { return n.name }

// Path is the namespace file, suitable for setns(2).
func (n *NS) Path() string { return filepath.Join(NetnsDir, n.name) }

// String returns the name.
func (n *NS) String() string { return n.name }

// Close stops the listeners started in the namespace and deletes it, which
// also destroys its interfaces. Closing twice is a no-op.
func (n *NS) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	closers := n.closers
	n.closers = nil
	n.mu.Unlock()

	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i].Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if err := deleteNS(n.name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func deleteNS(name string) error {
	if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns delete %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Delete deletes the namespace called name, which need not have been
// created by this process, such as one left over by a crashed run. A
// namespace that does not exist is not an error.
func Delete(name string) error {
	if name == "" || strings.ContainsAny(name, "/ \t\n") {
		return fmt.Errorf("netnstest: invalid namespace name %q", name)
	}
	err := deleteNS(name)
	if err != nil {
		if _, serr := os.Stat(filepath.Join(NetnsDir, name)); os.IsNotExist(serr) {
			return nil
		}
	}
	return err
}

// DeleteWithPrefix deletes every namespace whose name starts with prefix,
// the leftovers of runs that could not clean up, and returns the names it
// deleted.
func DeleteWithPrefix(prefix string) ([]string, error) {
	if prefix == "" {
		return nil, errors.New("netnstest: DeleteWithPrefix needs a prefix")
	}
	return deleteMatching(prefix, func(string) bool { return true })
}

// OwnedName names a namespace of this process: prefix, the process ID, "-"
// and name, such as "nfwt-diff-1234-router". DeleteOrphaned tells the
// namespaces so named of a process that has exited from those of a run in
// progress.
func OwnedName(prefix, name string) string {
	return prefix + strconv.Itoa(os.Getpid()) + "-" + name
}

// DeleteOrphaned deletes the namespaces named with OwnedName and prefix
// whose process no longer runs (and those whose name holds no process ID
// after prefix), the leftovers of killed runs, and returns the names it
// deleted. The namespaces of other live processes stay.
func DeleteOrphaned(prefix string) ([]string, error) {
	if prefix == "" {
		return nil, errors.New("netnstest: DeleteOrphaned needs a prefix")
	}
	return deleteMatching(prefix, func(name string) bool {
		pid, _, _ := strings.Cut(strings.TrimPrefix(name, prefix), "-")
		n, err := strconv.Atoi(pid)
		return err != nil || n == os.Getpid() || !processRuns(n)
	})
}

// processRuns reports whether a process with this ID exists.
func processRuns(pid int) bool {
	_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	return err == nil
}

// deleteMatching deletes the namespaces whose name starts with prefix and
// that orphaned accepts, and returns their names.
func deleteMatching(prefix string, orphaned func(name string) bool) ([]string, error) {
	entries, err := os.ReadDir(NetnsDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var deleted []string
	var errs []error
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) || !orphaned(e.Name()) {
			continue
		}
		if err := Delete(e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, e.Name())
	}
	return deleted, errors.Join(errs...)
}

// track registers c to be closed with the namespace.
func (n *NS) track(c io.Closer) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closers = append(n.closers, c)
}

// Exec runs a command inside the namespace (`ip netns exec`) and returns its
// combined output.
func (n *NS) Exec(args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("netnstest: Exec needs a command")
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s (in %s): %v: %s", strings.Join(args, " "), n.name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MustExec is Exec that fails the test on error. It panics on error for a
// namespace made by Create.
func (n *NS) MustExec(args ...string) string {
	out, err := n.Exec(args...)
	if err != nil {
		if n.tb != nil {
			n.tb.Helper()
			n.tb.Fatal(err)
		}
		panic(err)
	}
	return out
}

// IP runs `ip -n NAME args...`, for what LinkUp, AddAddr and AddRoute do
// not cover, such as bridges.
func (n *NS) IP(args ...string) error { return n.ip(args...) }

// ip runs `ip -n NAME args...`.
func (n *NS) ip(args ...string) error {
	out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s %s: %v: %s", n.name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Do runs fn on an OS thread that has entered the namespace. Sockets that
// fn creates belong to the namespace and stay there afterwards, so they may
// be used from any goroutine. Goroutines that fn starts do not run in the
// namespace. The thread is never handed back to the Go scheduler: it ends
// with fn, so no other goroutine can ever run in the wrong namespace.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Deliberately never unlocked: the runtime terminates a locked
		// thread when its goroutine exits.
		runtime.LockOSThread()
		f, err := os.Open(n.Path())
		if err != nil {
			errc <- err
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Sysctl writes a sysctl of the namespace, e.g. "net/ipv4/ip_forward".
func (n *NS) Sysctl(key, value string) error {
	return n.Do(func() error { return writeSysctl(key, value) })
}

func writeSysctl(key, value string) error {
	return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
}
