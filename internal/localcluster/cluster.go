// Package localcluster runs a real Kubernetes cluster on one machine, for
// `make cluster` and the real-cluster suite (test/cluster): a control plane
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and two
// nodes, each a network namespace on a shared LAN with its own containerd,
// kubelet, kube-proxy and flanneld (vxlan). The control-plane node's
// kube-proxy runs in nftables mode, the worker's in iptables mode. Pods get
// their addresses from the CNI bridge plugin within the node's pod CIDR,
// which kube-controller-manager allocates, and reach other nodes' pods over
// flannel's VXLAN. Images come from no registry: they are written as
// archives and imported into each node's containerd.
//
// Every process runs in the machine's mount namespace and in its node's
// network namespace (nsenter --net), as a node's daemons would. Everything
// the cluster leaves on the machine is under StateDir, RunDir, the network
// namespaces named Prefix+..., the cgroups named after the nodes and the
// kernel settings the kubelet changes; Down removes or restores all of it,
// also after a run that was killed.
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodefw/nodefw/internal/netnstest"
)

// Where the cluster lives on the machine.
const (
	// Prefix starts the name of every network namespace, host interface
	// and cgroup of the cluster.
	Prefix = "nfwc-"
	// StateDir holds the cluster's data: certificates, etcd, the nodes'
	// kubelet and containerd roots, logs and the admin kubeconfig.
	StateDir = "/var/lib/nodefw-cluster"
	// RunDir holds sockets and containerd's state (which mounts the pods'
	// network namespaces and root filesystems).
	RunDir = "/run/nodefw-cluster"
	// LANNamespace holds the bridge that joins the nodes and the machine.
	LANNamespace = Prefix + "lan"
	// HostInterface is the machine's port on the LAN.
	HostInterface = Prefix + "host"
	// APIServerPort is the API server's port on the control-plane node.
	APIServerPort = 6443
)

// The cluster's networks.
var (
	LAN = netip.MustParsePrefix("172.30.80.0/24")
	// HostAddr is the machine's address on the LAN: the client of the
	// NodePort probes and the nodes' default gateway.
	HostAddr = netip.MustParseAddr("172.30.80.1")
	// PodNetwork is the cluster CIDR; each node gets a /24 of it. It is the
	// pod network the samples in config/samples name.
	PodNetwork = netip.MustParsePrefix("10.244.0.0/16")
	// ServiceNetwork holds the ClusterIPs; the first is the API server's.
	ServiceNetwork = netip.MustParsePrefix("10.96.0.0/16")
	// KubernetesServiceIP is the ClusterIP of the kubernetes Service.
	KubernetesServiceIP = netip.MustParseAddr("10.96.0.1")
)

// NodeSpec describes one node.
type NodeSpec struct {
	// Name is the node's name and its network namespace's.
	Name string
	// Addr is the node's address on the LAN (eth0).
	Addr netip.Addr
	// ControlPlane nodes run the control plane and carry the label
	// node-role.kubernetes.io/control-plane.
	ControlPlane bool
	// ProxyMode is kube-proxy's mode: "nftables" or "iptables".
	ProxyMode string
}

// DefaultNodes are the cluster's nodes.
var DefaultNodes = []NodeSpec{
	{Name: Prefix + "cp", Addr: netip.MustParseAddr("172.30.80.10"), ControlPlane: true, ProxyMode: "nftables"},
	{Name: Prefix + "worker", Addr: netip.MustParseAddr("172.30.80.11"), ProxyMode: "iptables"},
}

// Options configure Up.
type Options struct {
	// RepoRoot is the repository's root; default ".".
	RepoRoot string
	// BinDir holds the binaries hack/cluster/build.sh builds; default
	// RepoRoot/bin/cluster/bin. CNIDir holds the CNI plugins; default
	// RepoRoot/bin/cluster/cni.
	BinDir, CNIDir string
	// AssetsDir holds kube-apiserver and etcd (hack/envtest-assets.sh);
	// default $KUBEBUILDER_ASSETS.
	AssetsDir string
	// ImageDir keeps the images' binaries and archives between runs, so
	// that unchanged binaries are not linked again; default
	// RepoRoot/bin/cluster/images.
	ImageDir string
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
}

// Cluster is a running local cluster.
type Cluster struct {
	opts Options
	// Kubeconfig is the admin kubeconfig (user nodefw-admin, group
	// system:masters).
	Kubeconfig string
	Config     *rest.Config
	Client     client.Client
	// ControlPlane is the node the control plane runs on.
	ControlPlane *Node
	Nodes        []*Node

	pki  *pki
	lock *net.UnixListener
}

// Node is one node of a running cluster.
type Node struct {
	NodeSpec
	// PodCIDR is the node's pod range, allocated by kube-controller-manager.
	PodCIDR netip.Prefix
	// KubeletRoot is the kubelet's --root-dir, which holds the pods'
	// volumes (their service account tokens among them).
	KubeletRoot string
	// ContainerdSocket is the node's containerd endpoint.
	ContainerdSocket string
}

// NetnsPath is the node's network namespace file.
func (n *Node) NetnsPath() string { return filepath.Join(netnstest.NetnsDir, n.Name) }

// Exec runs a command in the node's network namespace (and the machine's
// other namespaces) and returns its combined output.
func (n *Node) Exec(ctx context.Context, name string, args ...string) (string, error) {
	return nsExec(ctx, n.NetnsPath(), name, args...)
}

func nsExec(ctx context.Context, netns, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns, "--", name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %v in %s: %w: %s", name, args, filepath.Base(netns), err, out)
	}
	return string(out), nil
}

// nodeDir is a node's directory under StateDir, runNodeDir under RunDir.
func nodeDir(node string) string    { return filepath.Join(StateDir, node) }
func runNodeDir(node string) string { return filepath.Join(RunDir, node) }
func logDir() string                { return filepath.Join(StateDir, "logs") }

// AdminKubeconfig is where Up writes the admin kubeconfig.
var AdminKubeconfig = filepath.Join(StateDir, "kubeconfig")

func (o *Options) defaults() error {
	if o.RepoRoot == "" {
		o.RepoRoot = "."
	}
	root, err := filepath.Abs(o.RepoRoot)
	if err != nil {
		return err
	}
	o.RepoRoot = root
	if o.BinDir == "" {
		o.BinDir = filepath.Join(root, "bin", "cluster", "bin")
	}
	if o.CNIDir == "" {
		o.CNIDir = filepath.Join(root, "bin", "cluster", "cni")
	}
	if o.AssetsDir == "" {
		o.AssetsDir = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if o.ImageDir == "" {
		o.ImageDir = filepath.Join(root, "bin", "cluster", "images")
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// checkPrerequisites fails with what is missing and how to get it.
func (o *Options) checkPrerequisites() error {
	if os.Geteuid() != 0 {
		return errors.New("the local cluster needs root: it creates network namespaces, mounts and cgroups")
	}
	var missing []error
	need := func(path, hint string) {
		if fi, err := os.Stat(path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, fmt.Errorf("%s is missing (%s)", path, hint))
		}
	}
	if o.AssetsDir == "" {
		missing = append(missing, errors.New("KUBEBUILDER_ASSETS is not set: run through make, which builds kube-apiserver and etcd (hack/envtest-assets.sh)"))
	} else {
		for _, b := range []string{"kube-apiserver", "etcd"} {
			need(filepath.Join(o.AssetsDir, b), "run hack/envtest-assets.sh")
		}
	}
	for _, b := range []string{"kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler", "kubectl",
		"flanneld", "containerd", "ctr", "containerd-shim-runc-v2"} {
		need(filepath.Join(o.BinDir, b), "run hack/cluster/build.sh")
	}
	for _, b := range []string{"bridge", "host-local", "loopback", "portmap"} {
		need(filepath.Join(o.CNIDir, b), "run hack/cluster/build.sh")
	}
	for _, tool := range []struct{ name, pkg string }{
		{"runc", "runc"}, {"nsenter", "util-linux"}, {"ip", "iproute2"}, {"nft", "nftables"},
		{"iptables", "iptables"}, {"go", "the Go toolchain"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			missing = append(missing, fmt.Errorf("%s is not installed (%s)", tool.name, tool.pkg))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the local cluster cannot start: %w", errors.Join(missing...))
	}
	return nil
}

// Up removes whatever an earlier cluster left behind and starts a new one:
// network, control plane, nodes with their images imported, and waits
// until every node is Ready. nodefw itself is not deployed. The caller
// must call Down, or Close to leave the cluster running. When Up fails it
// removes what it started; the error ends with the end of every log.
func Up(ctx context.Context, opts Options) (*Cluster, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if err := opts.checkPrerequisites(); err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts}
	if err := c.acquireLock(ctx); err != nil {
		return nil, err
	}
	if err := c.up(ctx); err != nil {
		// The logs go with the cluster: keep their ends in the error.
		err = fmt.Errorf("%w\n%s", err, logTails(15))
		return nil, errors.Join(err, c.Down())
	}
	return c, nil
}

func (c *Cluster) logf(format string, args ...any) { c.opts.Logf(format, args...) }

func (c *Cluster) up(ctx context.Context) error {
	start := time.Now()
	if err := teardown(c.logf); err != nil {
		return fmt.Errorf("removing an earlier cluster: %w", err)
	}
	for _, d := range []string{StateDir, RunDir, logDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := saveKernelSettings(); err != nil {
		return err
	}

	// The images build while the control plane starts.
	type built struct {
		archives []string
		err      error
	}
	images := make(chan built, 1)
	go func() {
		archives, err := BuildImages(ctx, c.opts.RepoRoot, c.opts.ImageDir, Images)
		images <- built{archives, err}
	}()

	for _, spec := range DefaultNodes {
		n := &Node{
			NodeSpec:         spec,
			KubeletRoot:      filepath.Join(nodeDir(spec.Name), "kubelet"),
			ContainerdSocket: filepath.Join(runNodeDir(spec.Name), "containerd.sock"),
		}
		c.Nodes = append(c.Nodes, n)
		if spec.ControlPlane {
			c.ControlPlane = n
		}
	}
	c.logf("creating the LAN %s: the machine at %s, nodes %s", LAN, HostAddr, c.nodeList())
	if err := buildNetwork(c.Nodes); err != nil {
		return fmt.Errorf("building the network: %w", err)
	}
	if err := c.startControlPlane(ctx); err != nil {
		return err
	}
	c.logf("control plane serving after %s", since(start))

	b := <-images
	if b.err != nil {
		return b.err
	}
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Go(func() {
			if err := c.startNode(ctx, n, b.archives); err != nil {
				errs[i] = fmt.Errorf("node %s: %w", n.Name, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := c.configureNodes(ctx); err != nil {
		return err
	}
	c.logf("cluster ready after %s", since(start))
	return nil
}

func (c *Cluster) nodeList() string {
	s := ""
	for i, n := range c.Nodes {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s %s (kube-proxy %s)", n.Name, n.Addr, n.ProxyMode)
	}
	return s
}

// Close leaves the cluster running and releases the lock, as `make
// cluster` does before it exits.
func (c *Cluster) Close() {
	if c.lock != nil {
		c.lock.Close()
		c.lock = nil
	}
}

// Down stops and removes the cluster, everything on the machine included.
func (c *Cluster) Down() error {
	defer c.Close()
	return teardown(c.logf)
}

// Down removes a cluster that `make cluster` left running, or what a
// killed run left behind. It waits for a running Up to finish first.
func Down(ctx context.Context, logf func(string, ...any)) error {
	c := &Cluster{opts: Options{Logf: logf}}
	if err := c.opts.defaults(); err != nil {
		return err
	}
	if err := c.acquireLock(ctx); err != nil {
		return err
	}
	return c.Down()
}

// acquireLock keeps two clusters from starting at once. The lock is an
// abstract unix socket: the kernel releases it when its process dies.
func (c *Cluster) acquireLock(ctx context.Context) error {
	addr := &net.UnixAddr{Name: "@nodefw-localcluster", Net: "unix"}
	waiting := false
	for {
		l, err := net.ListenUnix("unix", addr)
		if err == nil {
			c.lock = l
			return nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("taking the local cluster's lock: %w", err)
		}
		if !waiting {
			c.logf("another local cluster is starting or under test; waiting for it")
			waiting = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the local cluster's lock: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// restConfig loads a kubeconfig.
func restConfig(path string) (*rest.Config, error) {
	return clientcmd.BuildConfigFromFlags("", path)
}

func since(t time.Time) string { return time.Since(t).Round(100 * time.Millisecond).String() }
