package testbed

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nodefw/nodefw/internal/netnstest"
)

// Verdict is what happened to a probe: Accepted, Dropped or Rejected.
type Verdict = netnstest.Verdict

const (
	// Accepted: the TCP handshake completed, or the UDP echo came back.
	Accepted = netnstest.Accepted
	// Dropped: no answer before the timeout, or the sender's own output
	// chain refused to send.
	Dropped = netnstest.Dropped
	// Rejected: a TCP reset or an ICMP unreachable came back.
	Rejected = netnstest.Rejected
)

// Proto is the protocol of a probe.
type Proto string

const (
	TCP Proto = "tcp"
	UDP Proto = "udp"
)

// ProbeTimeout is how long a probe waits for an answer before it counts as
// Dropped. Everything is local, so an answer takes well under a millisecond;
// the margin is for a loaded machine.
var ProbeTimeout = 700 * time.Millisecond

// Probe connects from a namespace to addr:port over proto and reports what
// happened. The error is only for failures of the probe itself.
func Probe(from *NS, proto Proto, addr netip.Addr, port uint16, timeout time.Duration) (Verdict, error) {
	switch proto {
	case TCP:
		return netnstest.ProbeTCP(from.NS, addr, port, netnstest.WithTimeout(timeout))
	case UDP:
		return netnstest.ProbeUDP(from.NS, addr, port, netnstest.WithTimeout(timeout))
	}
	return 0, fmt.Errorf("unknown protocol %q", proto)
}

// Host is one end of a probe: a node or a pod, its namespace and address.
type Host struct {
	Name string
	NS   *NS
	Addr netip.Addr
}

func (h *Host) String() string { return h.Name }

// Check is one probe and the verdict it should get.
type Check struct {
	From, To *Host
	Proto    Proto
	Port     uint16
	Want     Verdict
	// Note says what the port is, e.g. "kubelet".
	Note string
}

// Target is "tcp/10250".
func (c Check) Target() string { return fmt.Sprintf("%s/%d", c.Proto, c.Port) }

func (c Check) String() string {
	return fmt.Sprintf("%s -> %s %s", c.From, c.To, c.Target())
}

// Result is a check and what the probe got.
type Result struct {
	Check
	Got Verdict
	Err error
	// Took is how long the probe took.
	Took time.Duration
}

// OK reports whether the probe got the expected verdict.
func (r Result) OK() bool { return r.Err == nil && r.Got == r.Want }

// Results are the outcomes of a probe matrix.
type Results []Result

// OK reports whether every probe got its expected verdict.
func (rs Results) OK() bool {
	for _, r := range rs {
		if !r.OK() {
			return false
		}
	}
	return true
}

// Failed returns the probes that did not get their expected verdict.
func (rs Results) Failed() Results {
	var out Results
	for _, r := range rs {
		if !r.OK() {
			out = append(out, r)
		}
	}
	return out
}

// Table renders the results as an aligned table with a ✓ or ✗ per row.
func (rs Results) Table() string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "FROM\tTO\tPROBE\tPORT IS\tEXPECTED\tGOT")
	for _, r := range rs {
		mark := "✓"
		if !r.OK() {
			mark = "✗"
		}
		got := strings.ToLower(r.Got.String())
		if r.Err != nil {
			got = "error: " + r.Err.Error()
		}
		fmt.Fprintf(w, "%s (%s)\t%s (%s)\t%s\t%s\t%s\t%s %s\n",
			r.From.Name, r.From.Addr, r.To.Name, r.To.Addr, r.Target(), r.Note, strings.ToLower(r.Want.String()), mark, got)
	}
	w.Flush()
	return b.String()
}

// probeParallelism bounds the probes in flight: each holds an OS thread.
const probeParallelism = 32

// RunChecks runs every probe in parallel with the given timeout (0 means
// ProbeTimeout) and returns the results in the order of checks.
func RunChecks(checks []Check, timeout time.Duration) Results {
	if timeout == 0 {
		timeout = ProbeTimeout
	}
	out := make(Results, len(checks))
	sem := make(chan struct{}, probeParallelism)
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			start := time.Now()
			got, err := Probe(c.From.NS, c.Proto, c.To.Addr, c.Port, timeout)
			out[i] = Result{Check: c, Got: got, Err: err, Took: time.Since(start)}
		}()
	}
	wg.Wait()
	return out
}

// VerifyChecks runs the checks once and probes each mismatch again with a
// long timeout, so that a slow answer on a loaded machine is not mistaken
// for a drop. The results are final: a mismatch is a real one.
func VerifyChecks(checks []Check) Results {
	rs := RunChecks(checks, 0)
	var again []Check
	var idx []int
	for i, r := range rs {
		if !r.OK() && r.Got == Dropped && r.Want != Dropped {
			again = append(again, r.Check)
			idx = append(idx, i)
		}
	}
	if len(again) > 0 {
		for j, r := range RunChecks(again, 5*time.Second) {
			rs[idx[j]] = r
		}
	}
	return rs
}
