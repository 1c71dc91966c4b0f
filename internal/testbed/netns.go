package testbed

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// NetnsDir is where `ip netns` keeps its namespace files.
const NetnsDir = "/run/netns"

// NS is a network namespace created with `ip netns add`, with the
// listeners started in it.
type NS struct {
	Name string

	mu      sync.Mutex
	closers []io.Closer
	deleted bool
}

// netnsMu serialises `ip netns add` and `ip netns delete`: concurrent first
// calls race while setting up the shared mount of the namespace directory.
var netnsMu sync.Mutex

// CreateNS creates the namespace name with its loopback up.
func CreateNS(name string) (*NS, error) {
	if name == "" || strings.ContainsAny(name, "/ \t\n") {
		return nil, fmt.Errorf("invalid namespace name %q", name)
	}
	netnsMu.Lock()
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	netnsMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	ns := &NS{Name: name}
	if err := ns.IP("link", "set", "lo", "up"); err != nil {
		_ = ns.Delete()
		return nil, err
	}
	return ns, nil
}

// Path is the namespace file, as the agent's --netns flag takes it.
func (n *NS) Path() string { return filepath.Join(NetnsDir, n.Name) }

// String returns the name.
func (n *NS) String() string { return n.Name }

// Delete stops the namespace's listeners and deletes it, which destroys
// its interfaces too. Deleting twice is a no-op.
func (n *NS) Delete() error {
	n.mu.Lock()
	if n.deleted {
		n.mu.Unlock()
		return nil
	}
	n.deleted = true
	closers := n.closers
	n.closers = nil
	n.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		_ = closers[i].Close()
	}
	return deleteNS(n.Name)
}

func deleteNS(name string) error {
	netnsMu.Lock()
	out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput()
	netnsMu.Unlock()
	if err != nil {
		if _, serr := os.Stat(filepath.Join(NetnsDir, name)); os.IsNotExist(serr) {
			return nil
		}
		return fmt.Errorf("ip netns delete %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// deleteNamespacesWithPrefix deletes every namespace whose name starts with
// prefix: the leftovers of a run that could not clean up.
func deleteNamespacesWithPrefix(prefix string) ([]string, error) {
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
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		if err := deleteNS(e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, e.Name())
	}
	return deleted, errors.Join(errs...)
}

// Exec runs a command inside the namespace (`ip netns exec`) and returns
// its combined output.
func (n *NS) Exec(args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("Exec needs a command")
	}
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip netns exec %s %s: %v: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// IP runs `ip -n NAME args...`.
func (n *NS) IP(args ...string) error {
	out, err := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s %s: %v: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Do runs fn on an OS thread that has entered the namespace. Sockets fn
// creates belong to the namespace and may be used from any goroutine
// afterwards. The thread is never handed back to the scheduler: it ends
// with fn, so no other goroutine ever runs in the wrong namespace.
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
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Sysctl writes a sysctl of the namespace, e.g. "net/ipv4/ip_forward".
func (n *NS) Sysctl(key, value string) error {
	return n.Do(func() error {
		return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
	})
}

// veth joins two namespaces with a veth pair, aDev in a and bDev in b,
// created directly inside them, and brings both ends up.
func veth(a *NS, aDev string, b *NS, bDev string) error {
	if err := a.IP("link", "add", aDev, "type", "veth", "peer", "name", bDev, "netns", b.Name); err != nil {
		return err
	}
	if err := a.IP("link", "set", aDev, "up"); err != nil {
		return err
	}
	return b.IP("link", "set", bDev, "up")
}

// track registers c to be closed when the namespace is deleted.
func (n *NS) track(c io.Closer) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closers = append(n.closers, c)
}

// ServeTCP listens on the given TCP ports on every IPv4 address of the
// namespace, accepting connections and closing them at once.
func (n *NS) ServeTCP(ports ...uint16) error {
	var ls []net.Listener
	err := n.Do(func() error {
		for _, p := range ports {
			l, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", p))
			if err != nil {
				return fmt.Errorf("listening on tcp/%d in %s: %w", p, n.Name, err)
			}
			ls = append(ls, l)
		}
		return nil
	})
	if err != nil {
		for _, l := range ls {
			l.Close()
		}
		return err
	}
	for _, l := range ls {
		n.track(l)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				c.Close()
			}
		}()
	}
	return nil
}

// ServeUDPEcho runs UDP echo servers on the given ports, one socket per
// address in addrs, so that each echo leaves from the address the request
// was sent to.
func (n *NS) ServeUDPEcho(addrs []netip.Addr, ports ...uint16) error {
	var cs []net.PacketConn
	err := n.Do(func() error {
		for _, a := range addrs {
			for _, p := range ports {
				c, err := net.ListenPacket("udp4", netip.AddrPortFrom(a, p).String())
				if err != nil {
					return fmt.Errorf("listening on udp %s in %s: %w", netip.AddrPortFrom(a, p), n.Name, err)
				}
				cs = append(cs, c)
			}
		}
		return nil
	})
	if err != nil {
		for _, c := range cs {
			c.Close()
		}
		return err
	}
	for _, c := range cs {
		n.track(c)
		go func() {
			buf := make([]byte, 2048)
			for {
				k, from, err := c.ReadFrom(buf)
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				_, _ = c.WriteTo(buf[:k], from)
			}
		}()
	}
	return nil
}

// ServeTCPProxy listens on port on every IPv4 address of the namespace and
// relays each connection to upstream (host:port), dialled from the
// machine's own namespace. It makes a service of the machine, such as the
// API server on loopback, reachable from inside the namespace.
func (n *NS) ServeTCPProxy(port uint16, upstream string) error {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		if err != nil {
			return fmt.Errorf("listening on tcp/%d in %s: %w", port, n.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	n.track(l)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			go relay(c, upstream)
		}
	}()
	return nil
}

// relay copies between down and a new connection to upstream until either
// side closes. Goroutines that are not locked to a thread run in the
// machine's own namespace, so the dial reaches the machine's loopback.
func relay(down net.Conn, upstream string) {
	defer down.Close()
	up, err := net.DialTimeout("tcp", upstream, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, down); done <- struct{}{} }()
	go func() { _, _ = io.Copy(down, up); done <- struct{}{} }()
	<-done
}
