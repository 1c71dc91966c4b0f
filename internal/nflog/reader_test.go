package nflog

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"

	"github.com/nodefw/nodefw/internal/compile"
)

// counts is a Counter that remembers its increments.
type counts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counts) Inc(labels ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[strings.Join(labels, ",")]++
}

func (c *counts) get(labels ...string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[strings.Join(labels, ",")]
}

// packetMessage builds the data of an NFLOG packet message.
func packetMessage(t *testing.T, prefix string, inIndex uint32, payload []byte) []byte {
	t.Helper()
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: attrPacketHdr, Data: []byte{0x08, 0x00, 1, 0}},
		{Type: attrPrefix, Data: append([]byte(prefix), 0)},
		{Type: attrInDev, Data: binary.BigEndian.AppendUint32(nil, inIndex)},
		{Type: attrTimestamp, Data: binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, 1700000000), 250000)},
		{Type: attrPayload, Data: payload},
	})
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{2, 0, 0, 100}, attrs...)
}

// tcpSYN4 is an IPv4 TCP header from src:sport to dst:dport.
func tcpSYN4(src, dst string, sport, dport uint16) []byte {
	p := make([]byte, 40)
	p[0], p[9] = 0x45, 6
	binary.BigEndian.PutUint16(p[2:], 40)
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	return p
}

func TestParse(t *testing.T) {
	icmp6 := make([]byte, 48)
	icmp6[0], icmp6[6] = 0x60, 58
	copy(icmp6[8:], netip.MustParseAddr("2001:db8::1").AsSlice())
	copy(icmp6[24:], netip.MustParseAddr("2001:db8::2").AsSlice())
	icmp6[40], icmp6[41] = 128, 0
	u16 := func(v uint16) *uint16 { return &v }
	u8 := func(v uint8) *uint8 { return &v }
	addr := func(s string) *netip.Addr { a := netip.MustParseAddr(s); return &a }
	tests := []struct {
		name    string
		prefix  string
		sources map[string]compile.LogSource
		payload []byte
		want    Record
	}{{
		name:    "a known prefix, with its label",
		prefix:  "nfw drop p/ssh ssh-scan",
		sources: map[string]compile.LogSource{"nfw drop p/ssh ssh-scan": {Policy: "p", Rule: "ssh", Label: "ssh-scan", Verdict: "drop", Chain: "input"}},
		payload: tcpSYN4("192.0.2.1", "192.0.2.2", 40000, 22),
		want: Record{Policy: "p", Rule: "ssh", Label: "ssh-scan", Verdict: "drop", Chain: "input", Family: "ipv4", Protocol: "tcp",
			Source: addr("192.0.2.1"), Destination: addr("192.0.2.2"), SourcePort: u16(40000), DestPort: u16(22), Length: 40},
	}, {
		name:    "an unknown ruleset's prefix is parsed",
		prefix:  "nfw audit egress:output",
		payload: icmp6,
		want: Record{Policy: "egress", Rule: "default", Verdict: "audit", Chain: "output", Family: "ipv6", Protocol: "icmpv6",
			Source: addr("2001:db8::1"), Destination: addr("2001:db8::2"), ICMPType: u8(128), ICMPCode: u8(0), Length: 40},
	}, {
		name:    "a prefix of someone else's",
		prefix:  "other: ",
		payload: tcpSYN4("192.0.2.1", "192.0.2.2", 1, 2)[:20],
		want:    Record{Prefix: "other: ", Family: "ipv4", Protocol: "tcp", Source: addr("192.0.2.1"), Destination: addr("192.0.2.2"), Length: 40},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReader(1)
			r.SetSources(tt.sources)
			got, ok := r.parse(packetMessage(t, tt.prefix, 0, tt.payload))
			if !ok {
				t.Fatal("parse failed")
			}
			tt.want.Kind = "packet"
			tt.want.Time = got.Time
			if got.Time.Unix() != 1700000000 {
				t.Errorf("time = %v", got.Time)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(Record{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("parse (-want +got):\n%s", diff)
			}
		})
	}
}

// TestQueueOverflow: a writer that falls behind loses lines, counted, and
// never makes the reader wait or the queue grow past its bound.
func TestQueueOverflow(t *testing.T) {
	dropped, logged := &counts{}, &counts{}
	var out bytes.Buffer
	r := newReader(4)
	r.Out, r.Dropped, r.Logged, r.Node = &out, dropped, logged, "node-a"
	r.IfName = func(int) string { return "eth0" }
	r.SetSources(map[string]compile.LogSource{"nfw drop p/r": {Policy: "p", Rule: "r", Verdict: "drop"}})
	msg := packetMessage(t, "nfw drop p/r", 2, tcpSYN4("192.0.2.1", "192.0.2.2", 40000, 22))
	// No writer yet: the reader offers ten lines to a queue of four.
	for range 10 {
		rec, ok := r.parse(msg)
		if !ok {
			t.Fatal("parse failed")
		}
		r.offer(rec)
	}
	if n := len(r.queue); n != 4 {
		t.Errorf("queue holds %d lines, want its bound 4", n)
	}
	if n := dropped.get(DropQueueFull); n != 6 {
		t.Errorf("dropped %d lines, want 6", n)
	}
	close(r.queue)
	r.write()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("wrote %d lines, want 4:\n%s", len(lines), out.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"node": "node-a", "policy": "p", "rule": "r", "verdict": "drop", "inInterface": "eth0",
		"source": "192.0.2.1", "destinationPort": float64(22), "kind": "packet", "family": "ipv4", "protocol": "tcp"} {
		if rec[k] != v {
			t.Errorf("line %s: %s = %v, want %v", lines[0], k, rec[k], v)
		}
	}
	if n := logged.get("p", "r", "drop"); n != 4 {
		t.Errorf("logged counter = %d, want 4", n)
	}
}
