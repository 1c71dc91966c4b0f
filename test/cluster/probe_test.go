package cluster

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nodefw/nodefw/internal/localcluster"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// probeTimeout is how long a probe waits before it counts as dropped.
const probeTimeout = 2 * time.Second

// probe is one connection attempt with the verdict it should get.
type probe struct {
	// from describes the sender; netns is its network namespace file,
	// empty for the machine's (the LAN client).
	from, netns string
	proto       string // "tcp" or "udp"
	to          netip.AddrPort
	// via says what the destination is, for messages.
	via  string
	want netnstest.Verdict
	// answer, when set, is the name an accepted TCP probe must be answered
	// with: the pod the testserver runs in.
	answer string
	// local is set on a NodePort probe whose backend runs on the node the
	// probe is sent to: it does not cross VXLAN.
	local bool
}

func (p probe) String() string {
	return fmt.Sprintf("%s %s -> %s (%s)", p.proto, p.from, p.to, p.via)
}

// send runs the probe once: the verdict and, for TCP, the answer.
func (p probe) send() (netnstest.Verdict, string, error) {
	var (
		v      netnstest.Verdict
		answer string
		err    error
	)
	do := func() error {
		if p.proto == "tcp" {
			v, answer, err = dialTCP(p.to, p.answer != "")
		} else {
			v, err = echoUDP(p.to)
		}
		return nil
	}
	if p.netns == "" {
		_ = do()
	} else if nerr := localcluster.InNetns(p.netns, do); nerr != nil {
		return 0, "", nerr
	}
	return v, answer, err
}

// check runs the probe and describes a wrong verdict or answer.
func (p probe) check() string {
	v, answer, err := p.send()
	switch {
	case err != nil:
		return fmt.Sprintf("%s: %v", p, err)
	case v != p.want:
		return fmt.Sprintf("%s: %v, want %v", p, v, p.want)
	case v == netnstest.Accepted && p.answer != "" && answer != p.answer:
		return fmt.Sprintf("%s: answered by %q, want %q", p, answer, p.answer)
	}
	return ""
}

// expect runs the probes in parallel, once each, and fails the test for
// every wrong verdict.
func expect(t *testing.T, what string, probes ...probe) {
	t.Helper()
	for _, msg := range runAll(probes) {
		t.Errorf("%s: %s", what, msg)
	}
}

// eventually runs the probes until all get their verdicts, for changes
// that take effect asynchronously (a Service kube-proxy has yet to
// program), and fails the test with the last wrong verdicts at timeout.
func eventually(t *testing.T, what string, timeout time.Duration, probes ...probe) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs := runAll(probes)
		if len(msgs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s, after %s:\n%s", what, timeout, strings.Join(msgs, "\n"))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func runAll(probes []probe) []string {
	msgs := make([]string, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() { msgs[i] = p.check() })
	}
	wg.Wait()
	var out []string
	for _, m := range msgs {
		if m != "" {
			out = append(out, m)
		}
	}
	return out
}

// dialTCP connects and, with read, reads the testserver's one-line
// answer.
func dialTCP(to netip.AddrPort, read bool) (netnstest.Verdict, string, error) {
	c, err := net.DialTimeout("tcp", to.String(), probeTimeout)
	if err != nil {
		return classify(err)
	}
	defer c.Close()
	if !read {
		return netnstest.Accepted, "", nil
	}
	_ = c.SetReadDeadline(time.Now().Add(probeTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		// Connected, but the answer was lost: a firewall in the middle
		// dropping the rest of the connection is a drop too.
		v, _, cerr := classify(err)
		if cerr != nil {
			return 0, "", fmt.Errorf("connected, then: %w", cerr)
		}
		return v, "", nil
	}
	return netnstest.Accepted, strings.TrimSpace(line), nil
}

// echoUDP sends a token to the testserver's UDP echo, up to three times
// within the timeout, and waits for it to come back.
func echoUDP(to netip.AddrPort) (netnstest.Verdict, error) {
	c, err := net.Dial("udp", to.String())
	if err != nil {
		v, _, err := classify(err)
		return v, err
	}
	defer c.Close()
	token := make([]byte, 16)
	_, _ = rand.Read(token)
	buf := make([]byte, 64)
	const tries = 3
	for i := 0; i < tries; i++ {
		if _, err := c.Write(token); err != nil {
			v, _, err := classify(err)
			return v, err
		}
		_ = c.SetReadDeadline(time.Now().Add(probeTimeout / tries))
		for {
			n, err := c.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				v, _, err := classify(err)
				return v, err
			}
			if bytes.Equal(buf[:n], token) {
				return netnstest.Accepted, nil
			}
		}
	}
	return netnstest.Dropped, nil
}

func classify(err error) (netnstest.Verdict, string, error) {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return netnstest.Dropped, "", nil
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ECONNRESET):
		return netnstest.Rejected, "", nil
	}
	return 0, "", err
}
