package nft

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// minSocketBuffer is the least send and receive buffer of the netlink
// socket; Apply grows the buffers further for big batches.
const minSocketBuffer = 16 << 20

// maxSocketBuffer caps the buffers (the kernel doubles the value it is given).
const maxSocketBuffer = 1 << 30

func (p *Programmer) connLocked() (*nftables.Conn, error) {
	if p.closed {
		return nil, errors.New("nft: programmer is closed")
	}
	if p.conn == nil {
		if err := p.dial(); err != nil {
			return nil, err
		}
	}
	return p.conn, nil
}

// sizeBuffers makes the socket buffers fit a batch. The whole batch goes
// out in one sendmsg, and the kernel queues an acknowledgement per message
// plus an echo per rule before we read any of them.
func (p *Programmer) sizeBuffers(bytes, msgs int) error {
	if p.nl == nil {
		return nil
	}
	snd := bytes + bytes/4 + (1 << 20)
	rcv := msgs*1024 + 2*bytes + (1 << 20)
	if err := setBuffers(p.nl, max(snd, minSocketBuffer), max(rcv, minSocketBuffer)); err != nil {
		p.redial()
		return fmt.Errorf("nft: sizing netlink buffers: %w", err)
	}
	return nil
}

// redial replaces the connection after a failed batch: unread
// acknowledgements left on the old socket would confuse the next request.
func (p *Programmer) redial() {
	if p.conn != nil {
		_ = p.conn.CloseLasting()
		p.conn, p.nl = nil, nil
	}
	_ = p.dial()
}

// dial opens the lasting netlink connection.
func (p *Programmer) dial() error {
	opts := []nftables.ConnOption{
		nftables.AsLasting(),
		nftables.WithSockOptions(func(c *netlink.Conn) error {
			p.nl = c
			return setBuffers(c, minSocketBuffer, minSocketBuffer)
		}),
	}
	if p.nsFile != nil {
		opts = append(opts, nftables.WithNetNSFd(int(p.nsFile.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nft: opening netlink: %w", err)
	}
	p.conn = c
	return nil
}

// setBuffers sets the socket buffers, beyond the system maximum when the
// process may (CAP_NET_ADMIN), else as far as the maximum allows.
func setBuffers(c *netlink.Conn, snd, rcv int) error {
	snd, rcv = min(snd, maxSocketBuffer), min(rcv, maxSocketBuffer)
	if err := c.SetWriteBuffer(snd); err != nil {
		return err
	}
	if err := c.SetReadBuffer(rcv); err != nil {
		return err
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	return raw.Control(func(fd uintptr) {
		// Without the capability the plain settings above stand.
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, snd)
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcv)
	})
}
