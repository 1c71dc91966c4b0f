package diff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/nft"
	"github.com/nodefw/nodefw/internal/reference"
)

// nsPrefix starts the name of every namespace of this package, followed by
// the process ID (netnstest.OwnedName), so that namespaces left by a killed
// run can be told from those of a run in progress.
const nsPrefix = netnstest.Prefix + "nfwdiff-"

func mustAddrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

// Addresses. The client has several sources on its link, one of them in the
// sample policies' pod CIDR 10.244.0.0/16; the router owns .1 on both links
// and the server several destinations.
var (
	clientV4 = mustAddrs("10.77.1.10", "10.77.1.11", "10.77.1.12", "10.77.1.13", "10.244.1.10")
	clientV6 = mustAddrs("fd77:1::10", "fd77:1::11")
	serverV4 = mustAddrs("10.77.2.10", "10.77.2.20", "10.244.2.10")
	serverV6 = mustAddrs("fd77:2::10")

	routerClientV4 = netip.MustParseAddr("10.77.1.1")
	routerServerV4 = netip.MustParseAddr("10.77.2.1")
	routerClientV6 = netip.MustParseAddr("fd77:1::1")
	routerServerV6 = netip.MustParseAddr("fd77:2::1")
)

// plan wires each side. The router's two links share the prefix "eth"
// with each other but not with "lo", so that exact names and "+" wildcards
// each match a different set of probes. The router's first address of each
// family on a link is the gateway of the namespace behind it.
var plan = netnstest.RoutedPlan{
	ClientDev: "eth0", RouterClientDev: "ethc0", RouterServerDev: "eths0", ServerDev: "eth0",
	Client:       []string{"10.77.1.10/24", "10.77.1.11/24", "10.77.1.12/24", "10.77.1.13/24", "10.244.1.10/24", "fd77:1::10/64", "fd77:1::11/64"},
	RouterClient: []string{"10.77.1.1/24", "10.244.1.1/24", "fd77:1::1/64"},
	RouterServer: []string{"10.77.2.1/24", "10.244.2.1/24", "fd77:2::1/64"},
	Server:       []string{"10.77.2.10/24", "10.77.2.20/24", "10.244.2.10/24", "fd77:2::10/64"},
}

// Ports every namespace serves, TCP and UDP: the random rule sets' port
// universe and the ports of the sample policies' matrix. Ephemeral ports
// are moved above all of them.
const (
	universeFirst = 4000
	universeLast  = 4063
	ephemeral     = "40000 60999"
)

var seedPorts = []uint16{
	2378, 2379, 2380, 2381, 6443, 8471, 8472, 8473,
	10249, 10250, 10251, 10252, 10253, 29999, 30000, 32767, 32768,
}

func servedPorts() []uint16 {
	var ports []uint16
	for p := uint16(universeFirst); p <= universeLast; p++ {
		ports = append(ports, p)
	}
	return append(ports, seedPorts...)
}

// sysctls of every namespace. Ephemeral ports stay clear of the served
// ones. ICMP errors are not rate-limited: the kernel otherwise answers only
// about one rejected probe per second and client, and the others would look
// dropped.
var sysctls = [][2]string{
	{"net/ipv4/ip_local_port_range", ephemeral},
	{"net/ipv4/icmp_ratemask", "0"},
	{"net/ipv4/icmp_msgs_per_sec", "1000000"},
	{"net/ipv4/icmp_msgs_burst", "1000000"},
	{"net/ipv6/icmp/ratelimit", "0"},
}

// endpoint is a role in a topology.
type endpoint int

const (
	client endpoint = iota
	router
	server
)

// side is one router with its client and server, wired by plan.
type side struct {
	name string
	*netnstest.Routed
}

func (s *side) ns(e endpoint) *netnstest.NS {
	switch e {
	case client:
		return s.Client
	case router:
		return s.Router
	}
	return s.Server
}

func (s *side) namespaces() []*netnstest.NS {
	return []*netnstest.NS{s.Client, s.Router, s.Server}
}

// topology is the two sides: the reference, loaded with iptables-nft, and
// the agent's path.
type topology struct {
	ipt, nfw *side
	prog     *nft.Programmer
	dir      string
	// loads counts the rule sets loaded.
	loads int
	// ipsets says the iptables router holds ipset sets.
	ipsets bool
}

func newTopology() (_ *topology, err error) {
	t := &topology{}
	defer func() {
		if err != nil {
			_ = t.Close()
		}
	}()
	if t.dir, err = os.MkdirTemp("", "nfwdiff-"); err != nil {
		return nil, err
	}
	if t.ipt, err = newSide("iptables", "ipt"); err != nil {
		return nil, err
	}
	if t.nfw, err = newSide("nodefw", "nfw"); err != nil {
		return nil, err
	}
	if t.prog, err = nft.New(t.nfw.Router.Path(), ""); err != nil {
		return nil, err
	}
	return t, nil
}

func newSide(name, short string) (_ *side, err error) {
	r, err := netnstest.NewRoutedWith(netnstest.OwnedName(nsPrefix, short), plan)
	if err != nil {
		return nil, err
	}
	s := &side{name: name, Routed: r}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	ports := servedPorts()
	for _, ns := range s.namespaces() {
		if err := ns.Do(func() error {
			for _, kv := range sysctls {
				if err := os.WriteFile(filepath.Join("/proc/sys", kv[0]), []byte(kv[1]), 0o644); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("%s: sysctl: %w", ns, err)
		}
		if _, err := ns.ServeTCP(ports...); err != nil {
			return nil, fmt.Errorf("%s: %w", ns, err)
		}
		if _, err := ns.ServeUDPEcho(ports...); err != nil {
			return nil, fmt.Errorf("%s: %w", ns, err)
		}
	}
	return s, nil
}

// Close deletes every namespace and file of the topology.
func (t *topology) Close() error {
	var errs []error
	if t.prog != nil {
		errs = append(errs, t.prog.Close())
	}
	for _, s := range []*side{t.ipt, t.nfw} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	if t.dir != "" {
		errs = append(errs, os.RemoveAll(t.dir))
	}
	return errors.Join(errs...)
}

// load puts a rule set into both routers and forgets every connection, so
// that nothing a previous rule set accepted passes as ESTABLISHED.
func (t *topology) load(c *ruleCase) error {
	if err := t.loadIPSets(c.ipset); err != nil {
		return fmt.Errorf("ipset: %w", err)
	}
	if err := t.loadIptables(c.v4, c.v6); err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	t.loads++
	c.setLookups = t.loads%2 == 0
	c.exactSets = t.loads%4 == 0
	rs, err := compile.Compile(c.spec, c.options())
	if err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	if _, err := t.prog.Apply(rs); err != nil {
		return fmt.Errorf("nodefw: %w", err)
	}
	return t.flushConntrack()
}

// loadIPSets replaces the iptables router's ipset sets with those of an
// `ipset save` text: a set cannot be destroyed while a rule looks it up,
// nor a rule loaded before its set exists, so the rules go first.
func (t *topology) loadIPSets(text string) error {
	if t.ipsets {
		if err := t.loadIptables(acceptAll, acceptAll); err != nil {
			return err
		}
		if _, err := t.ipt.Router.Exec("ipset", "destroy"); err != nil {
			return err
		}
		t.ipsets = false
	}
	if text == "" {
		return nil
	}
	path := filepath.Join(t.dir, "ipset")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return err
	}
	if _, err := t.ipt.Router.Exec("ipset", "restore", "-file", path); err != nil {
		return err
	}
	t.ipsets = true
	return nil
}

// emptyMangle replaces the mangle table of a rule set before with nothing.
const emptyMangle = "*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"

func (t *topology) loadIptables(v4, v6 string) error {
	for _, f := range []struct{ tool, text string }{
		{"iptables-nft-restore", v4},
		{"ip6tables-nft-restore", v6},
	} {
		// iptables-restore replaces the tables it is given: a rule set
		// without PreRouting has no mangle table, and the last one's must go.
		text := f.text
		if !strings.Contains(text, "*mangle\n") {
			text += emptyMangle
		}
		path := filepath.Join(t.dir, f.tool)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			return err
		}
		if _, err := t.ipt.Router.Exec(f.tool, path); err != nil {
			return err
		}
	}
	return nil
}

func (t *topology) flushConntrack() error {
	for _, s := range []*side{t.ipt, t.nfw} {
		if err := flushConntrack(s.Router); err != nil {
			return fmt.Errorf("%s: flushing conntrack: %w", s.Router, err)
		}
	}
	return nil
}

// ipctnlMsgCtDelete is IPCTNL_MSG_CT_DELETE: without a tuple it deletes
// every conntrack entry of the message's family.
const ipctnlMsgCtDelete = 2

// sizeofNfgenmsg is the size of struct nfgenmsg: family, version, res_id.
const sizeofNfgenmsg = 4

// flushConntrack deletes the namespace's conntrack entries of both
// families over ctnetlink.
func flushConntrack(ns *netnstest.NS) error {
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return os.NewSyscallError("bind", err)
		}
		for i, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
			seq := uint32(i + 1)
			msg := make([]byte, 0, unix.NLMSG_HDRLEN+sizeofNfgenmsg)
			msg = binary.NativeEndian.AppendUint32(msg, unix.NLMSG_HDRLEN+sizeofNfgenmsg)
			msg = binary.NativeEndian.AppendUint16(msg, unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtDelete)
			msg = binary.NativeEndian.AppendUint16(msg, unix.NLM_F_REQUEST|unix.NLM_F_ACK)
			msg = binary.NativeEndian.AppendUint32(msg, seq)
			msg = binary.NativeEndian.AppendUint32(msg, 0)
			msg = append(msg, family, unix.NFNETLINK_V0, 0, 0)
			if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
				return os.NewSyscallError("sendto", err)
			}
			if err := readAck(fd, seq); err != nil {
				return err
			}
		}
		return nil
	})
}

// readAck reads netlink messages until the acknowledgement of seq.
func readAck(fd int, seq uint32) error {
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return os.NewSyscallError("recvfrom", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("short netlink acknowledgement")
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				return os.NewSyscallError("ctnetlink delete", syscall.Errno(-code))
			}
			return nil
		}
	}
}

// ruleCase is one rule set in both renderings.
type ruleCase struct {
	name   string
	spec   v1alpha1.NodeFirewallSpec
	v4, v6 string
	// derived says v4 and v6 are spec rendered by
	// reference.IPTablesRestore, rather than iptables text the spec was
	// imported from.
	derived bool
	// excused, when set, says why mismatches are expected: they are logged
	// instead of failing the test.
	excused string
	// setLookups compiles runs of simple rules into set lookups; every other
	// rule set loaded does, so both of the agent's modes are compared.
	setLookups bool
	// exactSets puts the single-key elements of every run's set into a
	// hash set of their own, whatever the set's size (half of the rule
	// sets with set lookups).
	exactSets bool
	// addressSets are the contents of the sets the rules' peers look up;
	// the iptables rendering has them as literal addresses, unless ipset
	// is set.
	addressSets compile.AddressSets
	// ipset, when set, is `ipset save` output the iptables rendering's
	// `-m set --match-set` rules look up: loaded with `ipset restore` into
	// the iptables router before them.
	ipset string
}

// options are the compile options of the case.
func (c *ruleCase) options() compile.Options {
	o := compile.Options{SetLookups: c.setLookups, AddressSets: c.addressSets}
	if c.exactSets {
		o.ExactSetMin = 1
	}
	return o
}

// newRuleCase renders a spec for iptables with the agent's options: no
// failsafes.
func newRuleCase(name string, spec v1alpha1.NodeFirewallSpec) *ruleCase {
	return newPeersRuleCase(name, spec, nil)
}

// newPeersRuleCase is newRuleCase for rules whose peers look up sets of
// the given contents.
func newPeersRuleCase(name string, spec v1alpha1.NodeFirewallSpec, sets compile.AddressSets) *ruleCase {
	v4, v6 := reference.IPTablesRestore(spec, compile.Options{AddressSets: sets})
	return &ruleCase{name: name, spec: spec, v4: v4, v6: v6, derived: true, addressSets: sets}
}
