package nflog

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nodefw/nodefw/internal/compile"
)

// nfnetlink_log constants (linux/netfilter/nfnetlink_log.h).
const (
	subsysULOG = 4

	msgPacket = 0
	msgConfig = 1

	attrPacketHdr = 1
	attrTimestamp = 3
	attrInDev     = 4
	attrOutDev    = 5
	attrPayload   = 9
	attrPrefix    = 10

	cfgCmd     = 1
	cfgMode    = 2
	cfgNLBuf   = 3
	cfgTimeout = 4
	cfgQThresh = 5

	cmdBind   = 1
	cmdUnbind = 2

	copyPacket = 2
)

// Settings of the group the reader binds: enough of each packet for its
// IP and transport headers, delivered in batches of up to qThreshold or
// after flushTimeout, in kernel buffers of nlBufSize; a receive buffer of
// socketBuffer bytes absorbs bursts before the kernel starts dropping.
const (
	copyRange    = 128
	qThreshold   = 32
	flushTimeout = 10 // hundredths of a second
	nlBufSize    = 64 << 10
	socketBuffer = 4 << 20
)

// DefaultQueueLen is the default bound of the queue between the socket
// and the writer, in lines.
const DefaultQueueLen = 4096

// Dropped-line reasons of Metrics.Dropped.
const (
	DropQueueFull = "queue_full"
	DropKernel    = "kernel_buffer"
)

// Counter is what the reader counts with: a Prometheus counter vector fits.
type Counter interface {
	Inc(labels ...string)
}

// Reader reads one NFLOG group and writes JSON lines.
type Reader struct {
	// Node is written in every line.
	Node string
	// Out receives the lines.
	Out io.Writer
	// Logged counts written lines by policy, rule and verdict; Dropped
	// counts lost ones by reason. Either may be nil.
	Logged, Dropped Counter
	// IfName names an interface index; nil means net.InterfaceByIndex.
	IfName func(index int) string

	conn    *netlink.Conn
	group   uint16
	queue   chan Record
	sources atomic.Pointer[sourceMaps]
	ifnames sync.Map // uint32 -> string
}

// Open binds group in the calling thread's network namespace. queueLen
// bounds the lines waiting for the writer; 0 means DefaultQueueLen.
func Open(group uint16, queueLen int) (*Reader, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nflog: dialing netfilter netlink: %w", err)
	}
	r := newReader(queueLen)
	r.conn, r.group = conn, group
	if err := r.configure(); err != nil {
		conn.Close()
		return nil, err
	}
	return r, nil
}

func newReader(queueLen int) *Reader {
	if queueLen <= 0 {
		queueLen = DefaultQueueLen
	}
	return &Reader{queue: make(chan Record, queueLen)}
}

// configure binds the group and sets its copy mode and batching.
func (r *Reader) configure() error {
	// Ask the kernel to report overruns: they are counted.
	if err := r.conn.SetOption(netlink.NoENOBUFS, false); err != nil {
		return fmt.Errorf("nflog: %w", err)
	}
	if err := r.conn.SetReadBuffer(socketBuffer); err != nil {
		return fmt.Errorf("nflog: setting the receive buffer: %w", err)
	}
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, copyRange)
	mode[4] = copyPacket
	for _, a := range [][]netlink.Attribute{
		{{Type: cfgCmd, Data: []byte{cmdBind}}},
		{{Type: cfgMode, Data: mode}},
		{{Type: cfgQThresh, Data: be32(qThreshold)}},
		{{Type: cfgTimeout, Data: be32(flushTimeout)}},
		{{Type: cfgNLBuf, Data: be32(nlBufSize)}},
	} {
		if err := r.config(a); err != nil {
			return fmt.Errorf("nflog: configuring group %d: %w", r.group, err)
		}
	}
	return nil
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// config sends one config message for the group and waits for its ack.
func (r *Reader) config(attrs []netlink.Attribute) error {
	data, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return err
	}
	// nfgenmsg: family, version, resource id (the group), big endian.
	hdr := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(r.group >> 8), byte(r.group)}
	_, err = r.conn.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(subsysULOG<<8 | msgConfig),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: append(hdr, data...),
	})
	return err
}

// SetSources gives the prefixes of the ruleset just programmed (the
// compile.Ruleset's LogSources). The previous ruleset's stay known too,
// for packets it logged just before it was replaced.
func (r *Reader) SetSources(m map[string]compile.LogSource) {
	next := &sourceMaps{current: m}
	if old := r.sources.Load(); old != nil {
		next.previous = old.current
	}
	r.sources.Store(next)
}

type sourceMaps struct {
	current, previous map[string]compile.LogSource
}

// Run reads the group and writes lines until ctx ends, then unbinds it.
func (r *Reader) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.write()
	}()
	stop := context.AfterFunc(ctx, func() { r.conn.Close() })
	defer stop()
	err := r.read()
	close(r.queue)
	<-done
	if ctx.Err() != nil {
		return nil
	}
	r.conn.Close()
	return err
}

// read receives batches of logged packets until the socket is closed.
func (r *Reader) read() error {
	for {
		msgs, err := r.conn.Receive()
		switch {
		case errors.Is(err, unix.ENOBUFS):
			// The kernel dropped messages that did not fit the buffer.
			r.drop(DropKernel)
			continue
		case err != nil:
			return err
		}
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(subsysULOG<<8|msgPacket) {
				continue
			}
			rec, ok := r.parse(m.Data)
			if !ok {
				continue
			}
			r.offer(rec)
		}
	}
}

// offer queues a line for the writer, or drops it when the queue is full:
// the reader must keep draining the socket.
func (r *Reader) offer(rec Record) {
	select {
	case r.queue <- rec:
	default:
		r.drop(DropQueueFull)
	}
}

func (r *Reader) drop(reason string) {
	if r.Dropped != nil {
		r.Dropped.Inc(reason)
	}
}

// parse decodes one packet message: nfgenmsg, then attributes.
func (r *Reader) parse(data []byte) (Record, bool) {
	if len(data) < 4 {
		return Record{}, false
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return Record{}, false
	}
	ad.ByteOrder = binary.BigEndian
	rec := Record{Kind: "packet"}
	var prefix string
	var payload []byte
	for ad.Next() {
		switch ad.Type() {
		case attrPrefix:
			prefix = ad.String()
		case attrInDev:
			rec.inIndex = ad.Uint32()
		case attrOutDev:
			rec.outIndex = ad.Uint32()
		case attrTimestamp:
			if b := ad.Bytes(); len(b) == 16 {
				rec.Time = time.Unix(int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:]))*1000).UTC()
			}
		case attrPayload:
			payload = ad.Bytes()
		}
	}
	if ad.Err() != nil {
		return Record{}, false
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now().UTC()
	}
	r.name(&rec, prefix)
	rec.parsePayload(payload)
	return rec, true
}

// name fills the policy, rule and verdict a prefix stands for.
func (r *Reader) name(rec *Record, prefix string) {
	src, ok := compile.LogSource{}, false
	if m := r.sources.Load(); m != nil {
		if src, ok = m.current[prefix]; !ok {
			src, ok = m.previous[prefix]
		}
	}
	if !ok {
		src, ok = compile.ParseLogPrefix(prefix)
	}
	if !ok {
		rec.Prefix = prefix
		return
	}
	rec.Policy, rec.Rule, rec.Label, rec.Verdict, rec.Chain = src.Policy, src.Rule, src.Label, src.Verdict, src.Chain
}

// write encodes queued records until the queue is closed.
func (r *Reader) write() {
	enc := json.NewEncoder(r.Out)
	for rec := range r.queue {
		rec.Node = r.Node
		rec.InInterface, rec.OutInterface = r.ifName(rec.inIndex), r.ifName(rec.outIndex)
		if err := enc.Encode(&rec); err != nil {
			r.drop("write_error")
			continue
		}
		if r.Logged != nil {
			r.Logged.Inc(rec.Policy, rec.Rule, rec.Verdict)
		}
	}
}

// ifName names an interface index, remembering names: interfaces come
// and go rarely, packets often.
func (r *Reader) ifName(index uint32) string {
	if index == 0 {
		return ""
	}
	if n, ok := r.ifnames.Load(index); ok {
		return n.(string)
	}
	var name string
	if r.IfName != nil {
		name = r.IfName(int(index))
	} else if ifc, err := net.InterfaceByIndex(int(index)); err == nil {
		name = ifc.Name
	}
	if name == "" {
		return "if" + itoa(int(index))
	}
	r.ifnames.Store(index, name)
	return name
}

// Close unbinds the group and closes the socket, for a reader not run.
func (r *Reader) Close() error {
	_ = r.config([]netlink.Attribute{{Type: cfgCmd, Data: []byte{cmdUnbind}}})
	return r.conn.Close()
}
