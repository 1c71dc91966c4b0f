package testbed

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/nodefw/nodefw/internal/netnstest"
)

// NetnsDir is where `ip netns` keeps its namespace files.
const NetnsDir = netnstest.NetnsDir

// NS is a network namespace of the cluster, with the listeners started in
// it. The embedded netnstest namespace provides Path, Exec, Do, IP, Sysctl
// and the rest, and serves netnstest's probes and listeners directly.
type NS struct {
	// Name is the namespace's name, exactly as given to CreateNS.
	Name string
	*netnstest.NS
}

// CreateNS creates the namespace name with its loopback up.
func CreateNS(name string) (*NS, error) {
	ns, err := netnstest.CreateExact(name)
	if err != nil {
		return nil, err
	}
	return &NS{Name: ns.Name(), NS: ns}, nil
}

// Delete stops the namespace's listeners and deletes it, which destroys
// its interfaces too. Deleting twice, or a namespace that is already gone,
// is a no-op.
func (n *NS) Delete() error {
	err := n.NS.Close()
	if err != nil {
		if _, serr := os.Stat(n.Path()); os.IsNotExist(serr) {
			return nil
		}
	}
	return err
}

// ServeTCP listens on the given TCP ports on every address of the
// namespace, accepting connections and closing them at once.
func (n *NS) ServeTCP(ports ...uint16) error {
	if _, err := n.NS.ServeTCP(ports...); err != nil {
		return fmt.Errorf("listening on tcp %v in %s: %w", ports, n.Name, err)
	}
	return nil
}

// ServeUDPEcho runs UDP echo servers on the given ports, one socket per
// address in addrs (every address of the namespace when addrs is empty);
// each echo leaves from the address the request was sent to.
func (n *NS) ServeUDPEcho(addrs []netip.Addr, ports ...uint16) error {
	if _, err := n.NS.ServeUDPEchoOn(addrs, ports...); err != nil {
		return fmt.Errorf("listening on udp %v in %s: %w", ports, n.Name, err)
	}
	return nil
}

// ServeTCPProxy listens on port on every address of the namespace and
// relays each connection to upstream (host:port), dialled from the
// machine's own namespace. It makes a service of the machine, such as the
// API server on loopback, reachable from inside the namespace.
func (n *NS) ServeTCPProxy(port uint16, upstream string) error {
	if _, err := n.NS.ServeTCPProxy(port, upstream); err != nil {
		return fmt.Errorf("listening on tcp/%d in %s: %w", port, n.Name, err)
	}
	return nil
}
