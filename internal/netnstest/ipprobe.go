package netnstest

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// IP protocol numbers of the probes.
const (
	ProtoICMP   = 1
	ProtoICMPv6 = 58
)

// IPMessage is a probe that is neither a TCP connection nor a UDP
// exchange: an ICMP or ICMPv6 message of a type and code, or a packet of
// another IP protocol.
type IPMessage struct {
	// Protocol is the IP protocol number: ProtoICMP and ProtoICMPv6 send
	// a message of Type and Code, any other protocol a bare payload.
	Protocol uint8
	// Type and Code of an ICMP or ICMPv6 message. An error message (ICMP
	// types 3, 4, 5, 11 and 12, ICMPv6 types 1 to 4) quotes a UDP packet
	// from the destination to the source, between ports 9, which no
	// connection of the probes uses.
	Type, Code uint8
}

func (m IPMessage) String() string {
	switch m.Protocol {
	case ProtoICMP:
		return fmt.Sprintf("icmp %d/%d", m.Type, m.Code)
	case ProtoICMPv6:
		return fmt.Sprintf("icmpv6 %d/%d", m.Type, m.Code)
	}
	return fmt.Sprintf("protocol %d", m.Protocol)
}

// ProbeIP sends msg from namespace from to dst, an address of namespace
// to, and reports whether it arrived: Accepted when a raw socket of to
// receives it, Rejected when an ICMP or ICMPv6 destination-unreachable
// that quotes it comes back to from, Dropped otherwise (or when from's own
// output hook refuses it). Every message carries a token of its own, so
// probes may run in parallel. An accepted ICMP query is answered by to's
// kernel as usual; the answer plays no part in the verdict.
func ProbeIP(from, to *NS, dst netip.Addr, msg IPMessage, opts ...ProbeOption) (Verdict, error) {
	cfg := newProbeConfig(opts)
	dst = dst.Unmap()
	if (msg.Protocol == ProtoICMP && !dst.Is4()) || (msg.Protocol == ProtoICMPv6 && !dst.Is6()) {
		return 0, fmt.Errorf("netnstest: %v to %v: wrong family", msg, dst)
	}
	errProto := uint8(ProtoICMP)
	if dst.Is6() {
		errProto = ProtoICMPv6
	}
	if err := to.ensureSink(dst.Is6(), msg.Protocol); err != nil {
		return 0, err
	}
	if err := from.ensureSink(dst.Is6(), errProto); err != nil {
		return 0, err
	}
	var token [16]byte
	if _, err := rand.Read(token[:]); err != nil {
		return 0, err
	}
	events := waitFor(token)
	defer forget(token)

	src := cfg.src
	payload := probePayload(msg, src, dst, token)
	var sendErr error
	if err := from.Do(func() error {
		network, laddr := "ip4:", "0.0.0.0"
		if dst.Is6() {
			network, laddr = "ip6:", "::"
		}
		if src.IsValid() {
			laddr = src.String()
		}
		c, err := net.ListenPacket(network+fmt.Sprint(msg.Protocol), laddr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, sendErr = c.WriteTo(payload, &net.IPAddr{IP: dst.AsSlice()})
		return nil
	}); err != nil {
		return 0, err
	}
	if sendErr != nil {
		return classify(sendErr)
	}
	deadline := time.After(cfg.timeout)
	for {
		select {
		case ev := <-events:
			switch {
			case ev.ns == to:
				return Accepted, nil
			case ev.ns == from && ev.unreachable:
				return Rejected, nil
			}
		case <-deadline:
			return Dropped, nil
		}
	}
}

// probeMagic starts the token in every probe's payload.
var probeMagic = []byte("nfw-probe")

// probePayload builds what a raw socket of msg's protocol sends: for ICMP
// and ICMPv6 the message (the kernel sums ICMPv6 itself); for other
// protocols four zero bytes (a plain GRE header), two bytes that make the
// payload's Internet checksum right, and the token. REJECT answers a
// packet of a protocol it does not know only when that sum is right: the
// payload's own over IPv4, with the pseudo-header of TCP and UDP over
// IPv6, where the source must be known.
func probePayload(msg IPMessage, src, dst netip.Addr, token [16]byte) []byte {
	tail := append(append([]byte(nil), probeMagic...), token[:]...)
	if msg.Protocol != ProtoICMP && msg.Protocol != ProtoICMPv6 {
		b := append(make([]byte, 6), tail...)
		switch {
		case dst.Is4():
			binary.BigEndian.PutUint16(b[4:], checksum(b))
		case src.IsValid():
			binary.BigEndian.PutUint16(b[4:], checksum(append(pseudoHeader(src, dst, msg.Protocol, len(b)), b...)))
		}
		return b
	}
	b := []byte{msg.Type, msg.Code, 0, 0}
	rest := make([]byte, 4) // identifier and sequence, or unused, MTU, pointer
	switch {
	case msg.IsICMPError():
		if msg.Protocol == ProtoICMP && msg.Type == 3 && msg.Code == 4 {
			binary.BigEndian.PutUint16(rest[2:], 1400)
		}
		if msg.Protocol == ProtoICMPv6 && msg.Type == 2 {
			binary.BigEndian.PutUint32(rest, 1280)
		}
		b = append(b, rest...)
		b = append(b, quotedPacket(msg.Protocol == ProtoICMPv6, src, dst)...)
	default:
		// A fresh identifier: an echo with one already answered would be
		// taken for part of that exchange.
		_, _ = rand.Read(rest[:2])
		b = append(b, rest...)
	}
	b = append(b, tail...)
	if msg.Protocol == ProtoICMP {
		binary.BigEndian.PutUint16(b[2:], checksum(b))
	}
	return b
}

// pseudoHeader is what TCP and UDP over IPv6 sum ahead of their segment.
func pseudoHeader(src, dst netip.Addr, proto uint8, n int) []byte {
	var h []byte
	h = append(h, src.AsSlice()...)
	h = append(h, dst.AsSlice()...)
	return append(h, 0, 0, byte(n>>8), byte(n), 0, 0, 0, proto)
}

// IsICMPError reports whether m is an ICMP or ICMPv6 error message, which
// no host answers with another.
func (m IPMessage) IsICMPError() bool {
	switch m.Protocol {
	case ProtoICMPv6:
		return m.Type >= 1 && m.Type <= 4
	case ProtoICMP:
		switch m.Type {
		case 3, 4, 5, 11, 12:
			return true
		}
	}
	return false
}

// quotedPacket is the start of a UDP packet from dst to src between ports
// 9, as an error message about it quotes it.
func quotedPacket(v6 bool, src, dst netip.Addr) []byte {
	udp := []byte{0, 9, 0, 9, 0, 8, 0, 0}
	if !v6 {
		h := []byte{0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0}
		h = append(h, addrBytes(dst, 4)...)
		h = append(h, addrBytes(src, 4)...)
		binary.BigEndian.PutUint16(h[10:], checksum(h))
		return append(h, udp...)
	}
	h := []byte{0x60, 0, 0, 0, 0, 8, 17, 64}
	h = append(h, addrBytes(dst, 16)...)
	h = append(h, addrBytes(src, 16)...)
	return append(h, udp...)
}

// addrBytes is a's n bytes, zeros for an unset address.
func addrBytes(a netip.Addr, n int) []byte {
	if !a.IsValid() {
		return make([]byte, n)
	}
	return a.AsSlice()
}

// checksum is the Internet checksum of b.
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// sinkEvent is a probe's token seen by a sink of namespace ns, in an ICMP
// destination-unreachable when unreachable is set.
type sinkEvent struct {
	ns          *NS
	unreachable bool
}

// waiters are the probes in flight, by token.
var waiters = struct {
	sync.Mutex
	m map[[16]byte]chan sinkEvent
}{m: map[[16]byte]chan sinkEvent{}}

func waitFor(token [16]byte) chan sinkEvent {
	c := make(chan sinkEvent, 8)
	waiters.Lock()
	waiters.m[token] = c
	waiters.Unlock()
	return c
}

func forget(token [16]byte) {
	waiters.Lock()
	delete(waiters.m, token)
	waiters.Unlock()
}

// notify tells the probe whose token b carries, if one waits, that ns saw
// it.
func notify(b []byte, ev sinkEvent) {
	i := bytes.Index(b, probeMagic)
	if i < 0 || len(b) < i+len(probeMagic)+16 {
		return
	}
	var token [16]byte
	copy(token[:], b[i+len(probeMagic):])
	waiters.Lock()
	c := waiters.m[token]
	waiters.Unlock()
	if c != nil {
		select {
		case c <- ev:
		default:
		}
	}
}

// sinkKey is one raw socket of a namespace: a family and a protocol.
type sinkKey struct {
	v6    bool
	proto uint8
}

// sinks are the raw sockets each namespace reads probes from.
var sinks = struct {
	sync.Mutex
	m map[*NS]map[sinkKey]bool
}{m: map[*NS]map[sinkKey]bool{}}

// ensureSink starts, once per namespace, family and protocol, a raw socket
// that reports every probe token it receives; it closes with the
// namespace.
func (n *NS) ensureSink(v6 bool, proto uint8) error {
	key := sinkKey{v6: v6, proto: proto}
	sinks.Lock()
	defer sinks.Unlock()
	if sinks.m[n][key] {
		return nil
	}
	var c net.PacketConn
	if err := n.Do(func() error {
		network, laddr := "ip4:", "0.0.0.0"
		if v6 {
			network, laddr = "ip6:", "::"
		}
		var err error
		c, err = net.ListenPacket(network+fmt.Sprint(proto), laddr)
		return err
	}); err != nil {
		return fmt.Errorf("netnstest: raw socket in %s: %w", n, err)
	}
	if sinks.m[n] == nil {
		sinks.m[n] = map[sinkKey]bool{}
	}
	sinks.m[n][key] = true
	n.track(closerFunc(func() error {
		sinks.Lock()
		delete(sinks.m, n)
		sinks.Unlock()
		return c.Close()
	}))
	go func() {
		buf := make([]byte, 65536)
		for {
			// The IPv4 header is stripped: b starts with the payload.
			k, _, err := c.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			b := buf[:k]
			unreachable := len(b) > 0 && ((proto == ProtoICMP && !v6 && b[0] == 3) || (proto == ProtoICMPv6 && v6 && b[0] == 1))
			notify(b, sinkEvent{ns: n, unreachable: unreachable})
		}
	}()
	return nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }
