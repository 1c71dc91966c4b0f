package nft

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
)

func TestScratchEcho(t *testing.T) {
	f, err := os.Open("/run/netns/nfwt-scratch")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	runtime.GOMAXPROCS(2)
	var nl *netlink.Conn
	c, err := nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(int(f.Fd())), nftables.WithSockOptions(func(c *netlink.Conn) error {
		nl = c
		if err := c.SetReadBuffer(256 << 20); err != nil {
			return err
		}
		return c.SetWriteBuffer(256 << 20)
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseLasting()
	tb := &nftables.Table{Family: nftables.TableFamilyINet, Name: "scratch"}
	c.AddTable(tb)
	c.DelTable(tb)
	c.AddTable(tb)
	ch := c.AddChain(&nftables.Chain{Table: tb, Name: "input", Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	for i := 0; i < 10000; i++ {
		s := &nftables.Set{ID: uint32(2*i + 1), Name: fmt.Sprintf("__set%d", 2*i), Table: tb, Anonymous: true, Constant: true, Interval: true, KeyType: nftables.TypeInetService}
		els := []nftables.SetElement{{Key: []byte{0, 0}, IntervalEnd: true}, {Key: []byte{0, 22}}, {Key: []byte{0, 23}, IntervalEnd: true}, {Key: []byte{1, 0}}, {Key: []byte{2, 0}, IntervalEnd: true}}
		if err := c.AddSet(s, els); err != nil {
			t.Fatal(err)
		}
		s2 := &nftables.Set{ID: uint32(2*i + 2), Name: fmt.Sprintf("__set%d", 2*i+1), Table: tb, Anonymous: true, Constant: true, Interval: true, KeyType: nftables.TypeIPAddr}
		els2 := []nftables.SetElement{{Key: []byte{0, 0, 0, 0}, IntervalEnd: true}, {Key: []byte{10, 0, 0, 0}}, {Key: []byte{11, 0, 0, 0}, IntervalEnd: true}, {Key: []byte{192, 168, 0, 0}}, {Key: []byte{192, 169, 0, 0}, IntervalEnd: true}}
		if err := c.AddSet(s2, els2); err != nil {
			t.Fatal(err)
		}
		c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: s2.Name, SetID: s2.ID},
			&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept}}})
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	nl.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	n := 0
	for {
		m, err := nl.Receive()
		if err != nil {
			t.Log(err)
			break
		}
		n += len(m)
		if n < 5 {
			t.Logf("%+v", m[0].Header)
		}
	}
	t.Log("leftover", n)
}
