package localcluster

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nodefw/nodefw/internal/netnstest"
)

// buildNetwork creates the LAN: a bridge in its own namespace, the
// machine's port on it (HostInterface, HostAddr) and one namespace per
// node joined to it by eth0, with the machine as default gateway. Deleting
// the LAN namespace deletes the machine's port too.
func buildNetwork(nodes []*Node) error {
	lan, err := netnstest.CreateExact(LANNamespace)
	if err != nil {
		return err
	}
	if err := lan.IP("link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	if err := lan.LinkUp("br0"); err != nil {
		return err
	}
	// The machine's port, its peer in the LAN namespace.
	if err := run("ip", "link", "add", HostInterface, "type", "veth", "peer", "name", "host", "netns", LANNamespace); err != nil {
		return fmt.Errorf("%w (a leftover %s interface of an earlier run?)", err, HostInterface)
	}
	if err := lan.IP("link", "set", "host", "master", "br0", "up"); err != nil {
		return err
	}
	bits := LAN.Bits()
	if err := run("ip", "addr", "add", fmt.Sprintf("%s/%d", HostAddr, bits), "dev", HostInterface); err != nil {
		return err
	}
	if err := run("ip", "link", "set", HostInterface, "up"); err != nil {
		return err
	}
	for i, n := range nodes {
		ns, err := netnstest.CreateExact(n.Name)
		if err != nil {
			return err
		}
		port := fmt.Sprintf("node%d", i)
		if err := lan.IP("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", n.Name); err != nil {
			return err
		}
		if err := lan.IP("link", "set", port, "master", "br0", "up"); err != nil {
			return err
		}
		for _, args := range [][]string{
			{"link", "set", "eth0", "up"},
			{"addr", "add", fmt.Sprintf("%s/%d", n.Addr, bits), "dev", "eth0"},
			{"route", "add", "default", "via", HostAddr.String()},
		} {
			if err := ns.IP(args...); err != nil {
				return err
			}
		}
		// A node routes its pods; bridged pod traffic passes netfilter,
		// as kube-proxy requires (br_netfilter).
		for key, value := range map[string]string{
			"net/ipv4/ip_forward":                 "1",
			"net/ipv6/conf/all/forwarding":        "1",
			"net/bridge/bridge-nf-call-iptables":  "1",
			"net/bridge/bridge-nf-call-ip6tables": "1",
			"net/ipv4/conf/all/rp_filter":         "0",
			"net/ipv4/conf/default/rp_filter":     "0",
		} {
			if err := ns.Sysctl(key, value); err != nil {
				return fmt.Errorf("sysctl %s in %s: %w", key, n.Name, err)
			}
		}
	}
	return nil
}

// inNetns runs fn on an OS thread in the network namespace at path; see
// netnstest.NS.Do, which this is for namespaces that are not named (a
// pod's).
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine.
		runtime.LockOSThread()
		f, err := os.Open(path)
		if err != nil {
			errc <- err
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
