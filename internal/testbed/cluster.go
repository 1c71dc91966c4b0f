package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// LabelControlPlane marks control-plane nodes, as kubeadm does.
const LabelControlPlane = "node-role.kubernetes.io/control-plane"

// The cluster's addresses: the nodes share one LAN, and each has a pod
// range with one pod behind it.
var (
	LANPrefix = netip.MustParsePrefix("172.30.77.0/24")
	// PodNetwork is the cluster's pod CIDR, split into one /24 per node.
	PodNetwork = netip.MustParsePrefix("10.244.0.0/16")
)

// Ports the listeners serve in every node. Every node listens on all of
// them, so a node that changes role (a relabel) has something to probe.
var (
	// NodeTCPPorts are the control-plane ports (API server, etcd, kubelet,
	// scheduler, controller-manager), the NodePort range's edges and a
	// NodePort inside it, and ports no policy lists.
	NodeTCPPorts = []uint16{
		6443, 2378, 2379, 2380, 2381,
		10249, 10250, 10251, 10252, 10253,
		29999, 30000, 30080, 31000, 32767,
		8080,
	}
	// NodeUDPPorts are echoed: flannel's VXLAN port.
	NodeUDPPorts = []uint16{8472}
	// PodTCPPort is served in every pod.
	PodTCPPort uint16 = 8080
)

// NodeSpec describes one node of the topology.
type NodeSpec struct {
	Name         string
	ControlPlane bool
	// Index numbers the node: its LAN address is .10+Index and its pod
	// range 10.244.Index.0/24.
	Index int
}

// DefaultNodes are the three nodes: one control plane and two workers.
var DefaultNodes = []NodeSpec{
	{Name: "cp-1", ControlPlane: true, Index: 1},
	{Name: "worker-1", Index: 2},
	{Name: "worker-2", Index: 3},
}

// Node is a "node": a network namespace on the LAN with a pod behind it
// and its own agent.
type Node struct {
	Host
	ControlPlane bool
	PodCIDR      netip.Prefix
	// Gateway is the node's address on its pod link (cni0).
	Gateway netip.Addr
	Pod     *Host
	Agent   *Process
}

// Options configure a Cluster.
type Options struct {
	// Prefix starts the name of every network namespace, e.g. "nfwd-".
	// Leftovers with this prefix from a crashed run are removed at start.
	Prefix string
	// RepoRoot is the repository's root (for config/crd/bases and the
	// sources); default ".".
	RepoRoot string
	// BinDir holds the manager and agent binaries. Empty means build them
	// from RepoRoot into the cluster's directory.
	BinDir string
	// ResyncPeriod is the agents' --resync-period; default 2s.
	ResyncPeriod time.Duration
	// FailsafeInbound is the agents' --failsafe-inbound. The default,
	// "tcp:22", keeps SSH only, so that every port of the hardening table
	// is decided by the policies and a policy change shows in the probes.
	FailsafeInbound string
	// Nodes default to DefaultNodes.
	Nodes []NodeSpec
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
}

// Cluster is the whole of nodefw on one machine: a control plane, the
// manager, and one agent per namespace node, on a LAN.
type Cluster struct {
	opts Options
	// Dir holds the kubeconfig, the logs and the control plane's files.
	Dir          string
	Kubeconfig   string
	ControlPlane *ControlPlane
	Client       client.Client
	Manager      *Process
	LAN          *NS
	Nodes        []*Node

	mu         sync.Mutex
	closed     bool
	lock       *net.UnixListener
	namespaces []*NS
}

// StartCluster builds the topology and starts everything. On error it
// cleans up what it started. The caller must Close the cluster.
func StartCluster(ctx context.Context, opts Options) (*Cluster, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the cluster needs root: it creates network namespaces and nftables tables")
	}
	if opts.Prefix == "" {
		return nil, errors.New("Options.Prefix is required")
	}
	if opts.RepoRoot == "" {
		opts.RepoRoot = "."
	}
	if opts.ResyncPeriod == 0 {
		opts.ResyncPeriod = 2 * time.Second
	}
	if opts.FailsafeInbound == "" {
		opts.FailsafeInbound = "tcp:22"
	}
	if opts.Nodes == nil {
		opts.Nodes = DefaultNodes
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	c := &Cluster{opts: opts}
	if err := c.start(ctx); err != nil {
		if cerr := c.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up: %w", cerr))
		}
		return nil, err
	}
	return c, nil
}

func (c *Cluster) logf(format string, args ...any) { c.opts.Logf(format, args...) }

func (c *Cluster) start(ctx context.Context) error {
	if err := c.acquireLock(ctx); err != nil {
		return err
	}
	if err := removeLeftovers(c.opts.Prefix, c.logf); err != nil {
		return fmt.Errorf("removing the leftovers of an earlier run: %w", err)
	}
	dir, err := os.MkdirTemp("", workDirPattern(c.opts.Prefix))
	if err != nil {
		return err
	}
	c.Dir = dir

	binDir := c.opts.BinDir
	if binDir == "" {
		binDir = filepath.Join(c.Dir, "bin")
		c.logf("building the manager and the agent")
		if err := BuildBinaries(ctx, c.opts.RepoRoot, binDir); err != nil {
			return err
		}
	}
	for _, b := range []string{"manager", "agent"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return fmt.Errorf("%s binary: %w (run `make build`)", b, err)
		}
	}

	c.logf("creating the network: a LAN bridge, %d node namespaces and a pod namespace behind each", len(c.opts.Nodes))
	if err := c.buildNetwork(); err != nil {
		return fmt.Errorf("building the network: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	c.logf("starting the control plane (etcd, kube-apiserver) and installing the CRDs")
	start := time.Now()
	cp, err := StartControlPlane(envtesting.CRDDir(c.opts.RepoRoot), c.Dir)
	if err != nil {
		return err
	}
	c.ControlPlane, c.Kubeconfig, c.Client = cp, cp.Kubeconfig, cp.Client
	c.logf("control plane serving after %s", since(start))
	if err := ctx.Err(); err != nil {
		return err
	}

	c.logf("starting the manager")
	c.Manager, err = StartProcess(c.Dir, "manager", filepath.Join(binDir, "manager"),
		"--kubeconfig", c.Kubeconfig, "--health-probe-bind-address", "0", "--metrics-bind-address", "0",
		"--revision-namespace", ManagerNamespace)
	if err != nil {
		return err
	}

	c.logf("registering the Node objects")
	if err := c.createNodes(ctx); err != nil {
		return err
	}

	c.logf("starting listeners: TCP %s and UDP echo %s in every node, TCP %d in every pod; "+
		"tcp/6443 of the control plane leads to the API server",
		portList(NodeTCPPorts), portList(NodeUDPPorts), PodTCPPort)
	if err := c.startListeners(); err != nil {
		return err
	}

	// Agents confirm every new ruleset by reaching the API server from
	// inside their node, as on a real node: through the control plane's
	// tcp/6443 on the LAN.
	cpAddrs := c.ControlPlaneAddrs()
	if len(cpAddrs) == 0 {
		return errors.New("the topology has no control-plane node")
	}
	confirm := netip.AddrPortFrom(cpAddrs[0], APIServerPort).String()
	c.logf("starting one agent per node (resync every %s, rulesets confirmed by reaching %s)", c.opts.ResyncPeriod, confirm)
	for _, n := range c.Nodes {
		n.Agent, err = StartProcess(c.Dir, "agent-"+n.Name, filepath.Join(binDir, "agent"),
			"--kubeconfig", c.Kubeconfig,
			"--node-name", n.Name,
			"--netns", n.NS.Path(),
			"--revision-namespace", ManagerNamespace,
			"--metrics-bind-address", "0",
			"--health-probe-bind-address", "0",
			"--resync-period", c.opts.ResyncPeriod.String(),
			"--failsafe-inbound", c.opts.FailsafeInbound,
			"--confirm-endpoint", confirm)
		if err != nil {
			return err
		}
	}

	c.logf("waiting for every agent to program its node")
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := c.WaitReady(wctx); err != nil {
		return fmt.Errorf("%w\n%s", err, c.ProcessLogTails(20))
	}
	return nil
}

// workDirPattern names the cluster's directory in the system's temporary
// directory, so that a crashed run's directory can be found again.
func workDirPattern(prefix string) string { return "nodefw-testbed-" + prefix }

// BuildBinaries builds the manager and the agent from repoRoot into dir.
func BuildBinaries(ctx context.Context, repoRoot, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./cmd/manager", "./cmd/agent")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/manager ./cmd/agent: %v\n%s", err, out)
	}
	return nil
}

// Node returns the node called name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Host returns a node ("worker-1") or a pod ("worker-1/pod"); it panics on
// an unknown name, which is a bug in the caller.
func (c *Cluster) Host(name string) *Host {
	node, pod := strings.CutSuffix(name, "/pod")
	if n := c.Node(node); n != nil {
		if pod {
			return n.Pod
		}
		return &n.Host
	}
	panic(fmt.Sprintf("testbed: no host %q", name))
}

// Agents are the nodes' agents, in the order of the nodes.
func (c *Cluster) Agents() []*Process {
	var out []*Process
	for _, n := range c.Nodes {
		out = append(out, n.Agent)
	}
	return out
}

// Processes are the manager and the agents.
func (c *Cluster) Processes() []*Process {
	return append([]*Process{c.Manager}, c.Agents()...)
}

// ControlPlaneAddrs are the LAN addresses of the control-plane nodes.
func (c *Cluster) ControlPlaneAddrs() []netip.Addr {
	var out []netip.Addr
	for _, n := range c.Nodes {
		if n.ControlPlane {
			out = append(out, n.Addr)
		}
	}
	return out
}

func (c *Cluster) newNS(name string) (*NS, error) {
	ns, err := CreateNS(c.opts.Prefix + name)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.namespaces = append(c.namespaces, ns)
	c.mu.Unlock()
	return ns, nil
}

// buildNetwork creates the LAN (a bridge in its own namespace, so that
// nothing is added to the machine's own network), the nodes on it, a pod
// behind each node, and the routes between the pod ranges.
func (c *Cluster) buildNetwork() error {
	lan, err := c.newNS("lan")
	if err != nil {
		return err
	}
	c.LAN = lan
	if err := lan.IP("link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	if err := lan.LinkUp("br0"); err != nil {
		return err
	}
	for _, spec := range c.opts.Nodes {
		if spec.Index < 1 || spec.Index > 200 {
			return fmt.Errorf("node %s: index %d out of range", spec.Name, spec.Index)
		}
		addr := nthAddr(LANPrefix, 10+spec.Index)
		podCIDR := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(spec.Index), 0}), 24)
		n := &Node{
			Host:         Host{Name: spec.Name, Addr: addr},
			ControlPlane: spec.ControlPlane,
			PodCIDR:      podCIDR,
			Gateway:      nthAddr(podCIDR, 1),
			Pod:          &Host{Name: spec.Name + "/pod", Addr: nthAddr(podCIDR, 2)},
		}
		if n.NS, err = c.newNS(spec.Name); err != nil {
			return err
		}
		if n.Pod.NS, err = c.newNS(spec.Name + "-pod"); err != nil {
			return err
		}
		steps := []func() error{
			func() error { return netnstest.Veth(n.NS.NS, "eth0", lan.NS, spec.Name) },
			func() error { return lan.IP("link", "set", spec.Name, "master", "br0") },
			func() error { return n.NS.AddAddr("eth0", prefixString(addr, LANPrefix.Bits())) },
			func() error { return n.NS.EnableForwarding() },
			func() error { return netnstest.Veth(n.NS.NS, "cni0", n.Pod.NS.NS, "eth0") },
			func() error { return n.NS.AddAddr("cni0", prefixString(n.Gateway, 24)) },
			func() error { return n.Pod.NS.AddAddr("eth0", prefixString(n.Pod.Addr, 24)) },
			func() error { return n.Pod.NS.AddRoute("default", n.Gateway.String()) },
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		for _, other := range c.Nodes {
			if other == n {
				continue
			}
			if err := n.NS.AddRoute(other.PodCIDR.String(), other.Addr.String()); err != nil {
				return err
			}
		}
	}
	return nil
}

func nthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func prefixString(a netip.Addr, bits int) string { return netip.PrefixFrom(a, bits).String() }

// createNodes registers a Node object per node, as a kubelet would: its
// labels, pod CIDR, InternalIP and a Ready condition.
func (c *Cluster) createNodes(ctx context.Context) error {
	for _, n := range c.Nodes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{
				"kubernetes.io/hostname": n.Name,
				"kubernetes.io/os":       "linux",
			}},
			Spec: corev1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}},
		}
		if n.ControlPlane {
			node.Labels[LabelControlPlane] = ""
		}
		if err := c.Client.Create(ctx, node); err != nil {
			return fmt.Errorf("creating node %s: %w", n.Name, err)
		}
		now := metav1.Now()
		node.Status = corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: n.Addr.String()},
				{Type: corev1.NodeHostName, Address: n.Name},
			},
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				Message: "namespace node", LastHeartbeatTime: now, LastTransitionTime: now,
			}},
		}
		if err := c.Client.Status().Update(ctx, node); err != nil {
			return fmt.Errorf("writing the status of node %s: %w", n.Name, err)
		}
	}
	return nil
}

// APIServerPort is where control-plane nodes serve the API server on the LAN.
const APIServerPort = 6443

func (c *Cluster) startListeners() error {
	u, err := url.Parse(c.ControlPlane.Config.Host)
	if err != nil {
		return fmt.Errorf("API server address %q: %w", c.ControlPlane.Config.Host, err)
	}
	for _, n := range c.Nodes {
		ports := NodeTCPPorts
		if n.ControlPlane {
			ports = slices.DeleteFunc(slices.Clone(ports), func(p uint16) bool { return p == APIServerPort })
			if err := n.NS.ServeTCPProxy(APIServerPort, u.Host); err != nil {
				return err
			}
		}
		if err := n.NS.ServeTCP(ports...); err != nil {
			return err
		}
		if err := n.NS.ServeUDPEcho([]netip.Addr{n.Addr, n.Gateway}, NodeUDPPorts...); err != nil {
			return err
		}
		if err := n.Pod.NS.ServeTCP(PodTCPPort); err != nil {
			return err
		}
	}
	return nil
}

func portList(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

// Close stops the agents (their tables stay, as agents are fail-static,
// and go with their namespaces), the manager and the control plane, then
// deletes every namespace and the cluster's directory. It is idempotent
// and safe on a partly started cluster.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()

	var errs []error
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		if n.Agent != nil {
			wg.Add(1)
			go func() { defer wg.Done(); n.Agent.Stop() }()
		}
	}
	wg.Wait()
	if c.Manager != nil {
		c.Manager.Stop()
	}
	if c.ControlPlane != nil {
		if err := c.ControlPlane.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping the control plane: %w", err))
		}
	}
	for i := len(c.namespaces) - 1; i >= 0; i-- {
		if err := c.namespaces[i].Delete(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Dir != "" {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if c.lock != nil {
		c.lock.Close()
	}
	return errors.Join(errs...)
}

// acquireLock makes sure only one cluster with this prefix runs at a time,
// waiting for another one to finish. The lock is an abstract unix socket:
// the kernel releases it when its process dies, however it dies, and it
// leaves no file behind.
func (c *Cluster) acquireLock(ctx context.Context) error {
	addr := &net.UnixAddr{Name: "@nodefw-testbed-" + c.opts.Prefix, Net: "unix"}
	waiting := false
	for {
		l, err := net.ListenUnix("unix", addr)
		if err == nil {
			c.lock = l
			return nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("taking the lock for prefix %q: %w", c.opts.Prefix, err)
		}
		if !waiting {
			c.logf("another run with namespace prefix %q is active; waiting for it to finish", c.opts.Prefix)
			waiting = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// removeLeftovers kills the processes of an earlier run that died without
// cleaning up (recognised by their arguments: their namespace, kubeconfig
// or data directories), deletes its namespaces and removes its directory.
// The caller holds the lock, so that run is not alive.
func removeLeftovers(prefix string, logf func(string, ...any)) error {
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), workDirPattern(prefix)+"*"))
	if err != nil {
		return err
	}
	marks := append([]string{filepath.Join(NetnsDir, prefix)}, dirs...)
	killed := killProcessesMatching(marks)
	if len(killed) > 0 {
		logf("killed %d processes left over by an earlier run", len(killed))
	}
	deleted, err := netnstest.DeleteWithPrefix(prefix)
	if len(deleted) > 0 {
		logf("deleted %d namespaces left over by an earlier run: %s", len(deleted), strings.Join(deleted, " "))
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killProcessesMatching SIGKILLs every process one of whose arguments
// contains one of marks, and waits for them to go.
func killProcessesMatching(marks []string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if matchesAny(args[1:], marks) {
			if p, err := os.FindProcess(pid); err == nil && p.Signal(syscall.SIGKILL) == nil {
				pids = append(pids, pid)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return pids
}

func matchesAny(args, marks []string) bool {
	for _, a := range args {
		for _, m := range marks {
			if m != "" && strings.Contains(a, m) {
				return true
			}
		}
	}
	return false
}
