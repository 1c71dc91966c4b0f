package netnstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Verdict is what happened to a probe.
type Verdict int

const (
	// Accepted: the TCP handshake completed, or the UDP echo came back.
	Accepted Verdict = iota + 1
	// Dropped: no answer before the timeout (or the local stack refused to
	// send, as when the sender's own output chain drops).
	Dropped
	// Rejected: an ICMP unreachable (or a TCP reset) came back.
	Rejected
)

func (v Verdict) String() string {
	switch v {
	case Accepted:
		return "Accepted"
	case Dropped:
		return "Dropped"
	case Rejected:
		return "Rejected"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// DefaultTimeout is how long a probe waits for an answer before it counts
// as Dropped.
var DefaultTimeout = 300 * time.Millisecond

type probeConfig struct {
	src     netip.Addr
	sport   uint16
	timeout time.Duration
}

// ProbeOption configures a probe.
type ProbeOption func(*probeConfig)

// WithSource binds the probe to a source address of the sending namespace.
func WithSource(addr netip.Addr) ProbeOption {
	return func(c *probeConfig) { c.src = addr }
}

// WithSourcePort sends a TCP or UDP probe from this source port rather
// than an ephemeral one. Probes from one port may run in parallel as long
// as their destinations differ; a TCP probe ends its connection with a
// reset, so that the next one from the same port finds no TIME_WAIT.
func WithSourcePort(port uint16) ProbeOption {
	return func(c *probeConfig) { c.sport = port }
}

// WithTimeout sets how long the probe waits before reporting Dropped.
func WithTimeout(d time.Duration) ProbeOption {
	return func(c *probeConfig) { c.timeout = d }
}

func newProbeConfig(opts []ProbeOption) probeConfig {
	c := probeConfig{timeout: DefaultTimeout}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// ProbeTCP connects from a namespace to addr:port and reports whether the
// connection was accepted, dropped or rejected. The error is only for
// failures of the probe itself. Probes are independent and may run in
// parallel.
func ProbeTCP(from *NS, addr netip.Addr, port uint16, opts ...ProbeOption) (Verdict, error) {
	cfg := newProbeConfig(opts)
	var v Verdict
	err := from.Do(func() error {
		var err error
		v, err = tcpConnect(cfg.src, cfg.sport, addr, port, cfg.timeout)
		return err
	})
	return v, err
}

// tcpConnect connects with raw system calls rather than the net package so
// that it can read ICMP errors from the socket's error queue. The kernel
// keeps an ICMP error for a SYN as a soft error, to be acted on only at the
// next retransmission, when it arrives while the connecting call still holds
// the socket, as happens when both ends share one kernel; the error queue
// reports it at once.
func tcpConnect(src netip.Addr, sport uint16, dst netip.Addr, port uint16, timeout time.Duration) (Verdict, error) {
	dst = dst.Unmap()
	family, level, opt := unix.AF_INET, unix.IPPROTO_IP, unix.IP_RECVERR
	if dst.Is6() {
		family, level, opt = unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_RECVERR
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
		return 0, os.NewSyscallError("setsockopt", err)
	}
	if sport != 0 {
		// Other probes may hold the port; closing with a reset leaves no
		// TIME_WAIT behind for the next one.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return 0, os.NewSyscallError("setsockopt", err)
		}
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1}); err != nil {
			return 0, os.NewSyscallError("setsockopt", err)
		}
	}
	if src.IsValid() || sport != 0 {
		if !src.IsValid() {
			src = netip.IPv4Unspecified()
			if dst.Is6() {
				src = netip.IPv6Unspecified()
			}
		}
		sa, err := sockaddr(src, sport)
		if err != nil {
			return 0, err
		}
		if err := unix.Bind(fd, sa); err != nil {
			return 0, os.NewSyscallError("bind", err)
		}
	}
	sa, err := sockaddr(dst, port)
	if err != nil {
		return 0, err
	}
	switch err := unix.Connect(fd, sa); err {
	case nil:
		return Accepted, nil
	case unix.EINPROGRESS:
	default:
		return classify(os.NewSyscallError("connect", err))
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return Dropped, nil
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, os.NewSyscallError("poll", err)
		}
		if n == 0 {
			continue
		}
		if errno := errorQueue(fd); errno != 0 {
			return classify(os.NewSyscallError("connect", errno))
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return 0, os.NewSyscallError("getsockopt", err)
		}
		if soErr != 0 {
			return classify(os.NewSyscallError("connect", syscall.Errno(soErr)))
		}
		if fds[0].Revents&unix.POLLOUT != 0 {
			if _, err := unix.Getpeername(fd); err == nil {
				return Accepted, nil
			}
		}
		if fds[0].Revents&unix.POLLERR == 0 {
			continue
		}
		// An error with nothing to report: wait for the rest.
		time.Sleep(time.Millisecond)
	}
}

// errorQueue returns the errno of the first ICMP error queued on a socket
// with IP_RECVERR or IPV6_RECVERR set, or 0.
func errorQueue(fd int) syscall.Errno {
	oob := make([]byte, 512)
	buf := make([]byte, 512)
	_, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
	if err != nil {
		return 0
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if (m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_RECVERR) ||
			(m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_RECVERR) {
			if len(m.Data) >= 4 {
				return syscall.Errno(binary.NativeEndian.Uint32(m.Data[:4]))
			}
		}
	}
	return 0
}

func sockaddr(a netip.Addr, port uint16) (unix.Sockaddr, error) {
	if a.Is4() || a.Is4In6() {
		return &unix.SockaddrInet4{Port: int(port), Addr: a.Unmap().As4()}, nil
	}
	sa := &unix.SockaddrInet6{Port: int(port), Addr: a.As16()}
	if z := a.Zone(); z != "" {
		ifi, err := net.InterfaceByName(z)
		if err != nil {
			return nil, err
		}
		sa.ZoneId = uint32(ifi.Index)
	}
	return sa, nil
}

// ProbeUDP sends a datagram from a namespace to addr:port, where a server
// started with ServeUDPEcho should echo it, and reports whether the echo
// came back (Accepted), nothing came back (Dropped) or an ICMP unreachable
// of any code came back (Rejected).
// The datagram is resent a few times within the timeout.
func ProbeUDP(from *NS, addr netip.Addr, port uint16, opts ...ProbeOption) (Verdict, error) {
	cfg := newProbeConfig(opts)
	var v Verdict
	err := from.Do(func() error {
		var d net.Dialer
		if cfg.src.IsValid() || cfg.sport != 0 {
			la := &net.UDPAddr{Port: int(cfg.sport)}
			if cfg.src.IsValid() {
				la.IP, la.Zone = cfg.src.AsSlice(), cfg.src.Zone()
			}
			d.LocalAddr = la
		}
		// Every ICMP error reaches the socket (IP_RECVERR), not only those
		// UDP takes as fatal: a host-unreachable answer is a reject too.
		// Probes to other destinations may hold a fixed source port: each
		// socket is connected, and gets its own answers.
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				if addr.Unmap().Is4() {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1)
				} else {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1)
				}
				if serr == nil && cfg.sport != 0 {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
				}
			}); err != nil {
				return err
			}
			return serr
		}
		c, err := d.Dial("udp", netip.AddrPortFrom(addr, port).String())
		if err != nil {
			v, err = classify(err)
			return err
		}
		defer c.Close()
		v, err = udpExchange(c, cfg.timeout)
		return err
	})
	return v, err
}

func udpExchange(c net.Conn, timeout time.Duration) (Verdict, error) {
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		return 0, err
	}
	const tries = 3
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 64)
	for i := 0; i < tries; i++ {
		if _, err := c.Write(token); err != nil {
			return classify(err)
		}
		slice := time.Now().Add(timeout / tries)
		if i == tries-1 || slice.After(deadline) {
			slice = deadline
		}
		if err := c.SetReadDeadline(slice); err != nil {
			return 0, err
		}
		for {
			n, err := c.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return classify(err)
			}
			if bytes.Equal(buf[:n], token) {
				return Accepted, nil
			}
		}
	}
	return Dropped, nil
}

// classify maps a socket error to a verdict; errors that say nothing about
// the firewall are returned.
func classify(err error) (Verdict, error) {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return Dropped, nil
	case errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EACCES):
		return Rejected, nil
	case errors.Is(err, syscall.EPERM):
		// The sender's own output hook dropped the packet.
		return Dropped, nil
	}
	return 0, err
}

// ExpectTCP probes with ProbeTCP and fails the test unless the verdict is want.
func ExpectTCP(tb testing.TB, from *NS, addr netip.Addr, port uint16, want Verdict, opts ...ProbeOption) {
	tb.Helper()
	got, err := ProbeTCP(from, addr, port, opts...)
	if err != nil {
		tb.Errorf("tcp %s -> %s: %v", from, netip.AddrPortFrom(addr, port), err)
	} else if got != want {
		tb.Errorf("tcp %s -> %s: %v, want %v", from, netip.AddrPortFrom(addr, port), got, want)
	}
}

// ExpectUDP probes with ProbeUDP and fails the test unless the verdict is want.
func ExpectUDP(tb testing.TB, from *NS, addr netip.Addr, port uint16, want Verdict, opts ...ProbeOption) {
	tb.Helper()
	got, err := ProbeUDP(from, addr, port, opts...)
	if err != nil {
		tb.Errorf("udp %s -> %s: %v", from, netip.AddrPortFrom(addr, port), err)
	} else if got != want {
		tb.Errorf("udp %s -> %s: %v, want %v", from, netip.AddrPortFrom(addr, port), got, want)
	}
}

// multiCloser closes a group of listeners once.
type multiCloser struct {
	once    sync.Once
	closers []io.Closer
	wg      sync.WaitGroup
	err     error
}

func (m *multiCloser) Close() error {
	m.once.Do(func() {
		var errs []error
		for _, c := range m.closers {
			if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		m.wg.Wait()
		m.err = errors.Join(errs...)
	})
	return m.err
}

// ServeTCP listens on the given TCP ports on every address of the
// namespace, IPv4 and IPv6, accepting and at once closing connections. The
// listeners stop when the returned closer or the namespace is closed.
func (n *NS) ServeTCP(ports ...uint16) (io.Closer, error) {
	return n.serveTCP(ports, func(conn net.Conn) { conn.Close() })
}

// ServeTCPProxy listens on port on every address of the namespace and
// relays each connection to upstream (host:port), dialled from the
// caller's own namespace. It makes a service outside the namespace, such
// as one on the machine's loopback, reachable from inside. The listener
// stops when the returned closer or the namespace is closed; connections
// already relayed go on until one side closes them.
func (n *NS) ServeTCPProxy(port uint16, upstream string) (io.Closer, error) {
	return n.serveTCP([]uint16{port}, func(conn net.Conn) { go relay(conn, upstream) })
}

// serveTCP listens on the ports inside the namespace and hands every
// accepted connection to handle.
func (n *NS) serveTCP(ports []uint16, handle func(net.Conn)) (io.Closer, error) {
	m := &multiCloser{}
	err := n.Do(func() error {
		for _, p := range ports {
			l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
			if err != nil {
				return err
			}
			m.closers = append(m.closers, l)
		}
		return nil
	})
	if err != nil {
		m.Close()
		return nil, err
	}
	for _, c := range m.closers {
		l := c.(net.Listener)
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			for {
				conn, err := l.Accept()
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				handle(conn)
			}
		}()
	}
	n.track(m)
	return m, nil
}

// relay copies between down and a new connection to upstream until either
// side closes. It runs on a goroutine that has not entered any namespace,
// so the dial leaves from the process's own namespace.
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

// ServeUDPEcho runs UDP echo servers on the given ports on every address
// of the namespace, IPv4 and IPv6. Replies leave from the address the
// request was sent to, so probes of any local address work. The servers
// stop when the returned closer or the namespace is closed.
func (n *NS) ServeUDPEcho(ports ...uint16) (io.Closer, error) {
	return n.ServeUDPEchoOn(nil, ports...)
}

// ServeUDPEchoOn is ServeUDPEcho on the given addresses of the namespace
// only, one server per address and port; no addresses means every
// address, as with ServeUDPEcho.
func (n *NS) ServeUDPEchoOn(addrs []netip.Addr, ports ...uint16) (io.Closer, error) {
	if len(addrs) == 0 {
		addrs = []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}
	}
	m := &multiCloser{}
	var loops []func()
	err := n.Do(func() error {
		for _, p := range ports {
			for _, a := range addrs {
				loop, err := m.listenUDPEcho(a.Unmap(), p)
				if err != nil {
					return err
				}
				loops = append(loops, loop)
			}
		}
		return nil
	})
	if err != nil {
		m.Close()
		return nil, err
	}
	for _, loop := range loops {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			loop()
		}()
	}
	n.track(m)
	return m, nil
}

// listenUDPEcho opens an echo server's socket on addr:port, registers it
// with m and returns the server's loop.
func (m *multiCloser) listenUDPEcho(addr netip.Addr, port uint16) (func(), error) {
	network := "udp6"
	if addr.Is4() {
		network = "udp4"
	}
	c, err := net.ListenPacket(network, netip.AddrPortFrom(addr, port).String())
	if err != nil {
		return nil, err
	}
	m.closers = append(m.closers, c)
	if addr.Is4() {
		pc := ipv4.NewPacketConn(c)
		if err := pc.SetControlMessage(ipv4.FlagDst, true); err != nil {
			return nil, err
		}
		return func() { echo4(pc) }, nil
	}
	pc := ipv6.NewPacketConn(c)
	if err := pc.SetControlMessage(ipv6.FlagDst, true); err != nil {
		return nil, err
	}
	return func() { echo6(pc) }, nil
}

func echo4(pc *ipv4.PacketConn) {
	buf := make([]byte, 2048)
	for {
		n, cm, src, err := pc.ReadFrom(buf)
		if err != nil {
			if isClosed(err) {
				return
			}
			continue
		}
		var reply *ipv4.ControlMessage
		if cm != nil {
			reply = &ipv4.ControlMessage{Src: cm.Dst}
		}
		_, _ = pc.WriteTo(buf[:n], reply, src)
	}
}

func echo6(pc *ipv6.PacketConn) {
	buf := make([]byte, 2048)
	for {
		n, cm, src, err := pc.ReadFrom(buf)
		if err != nil {
			if isClosed(err) {
				return
			}
			continue
		}
		var reply *ipv6.ControlMessage
		if cm != nil {
			reply = &ipv6.ControlMessage{Src: cm.Dst}
		}
		_, _ = pc.WriteTo(buf[:n], reply, src)
	}
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) || errors.Is(err, context.Canceled)
}
