package localcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"k8s.io/apimachinery/pkg/util/wait"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// LabelControlPlane marks control-plane nodes, as kubeadm does; the
// control-plane sample policy selects them by it.
const LabelControlPlane = "node-role.kubernetes.io/control-plane"

// flannelMTU is the pods' MTU: the LAN's 1500 less VXLAN's 50 bytes, as
// flannel computes it.
const flannelMTU = 1450

// cniNetworkName names the pod network; libcni's cache files carry it.
const cniNetworkName = Prefix + "pods"

// startNode starts the node's containerd, imports the images and starts
// its kubelet.
func (c *Cluster) startNode(ctx context.Context, n *Node, archives []string) error {
	dir, run := nodeDir(n.Name), runNodeDir(n.Name)
	for _, d := range []string{dir, run, n.KubeletRoot, filepath.Join(dir, "cni", "net.d")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		return err
	}
	config := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(config, []byte(containerdConfig(n, runc, c.opts.CNIDir)), 0o644); err != nil {
		return err
	}
	c.logf("%s: starting containerd", n.Name)
	// The shim is found on PATH.
	path := "PATH=" + c.opts.BinDir + string(os.PathListSeparator) + os.Getenv("PATH")
	if err := startDaemon(n.Name, n.Name+"-containerd", []string{path}, filepath.Join(c.opts.BinDir, "containerd"), "--config", config); err != nil {
		return err
	}
	if err := waitSocket(ctx, n.ContainerdSocket, time.Minute); err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	c.logf("%s: importing %d images", n.Name, len(archives))
	for _, a := range archives {
		cmd := exec.CommandContext(ctx, filepath.Join(c.opts.BinDir, "ctr"), "--address", n.ContainerdSocket,
			"--namespace", "k8s.io", "images", "import", a)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("importing %s: %v\n%s", a, err, out)
		}
	}

	c.logf("%s: starting the kubelet", n.Name)
	if err := createCgroupRoot(n.Name); err != nil {
		return err
	}
	certPath, keyPath, err := c.pki.issue(n.Name+"-kubelet-serving", certSpec{
		CommonName: "system:node:" + n.Name, DNSNames: []string{n.Name}, IPs: []net.IP{n.Addr.AsSlice()}, Server: true,
	})
	if err != nil {
		return err
	}
	kubeconfig := kubeconfigPath(n.Name + "-kubelet")
	if err := c.pki.kubeconfig(kubeconfig, c.APIServerURL(), "system:node:"+n.Name, groupNodes); err != nil {
		return err
	}
	kubeletConfig := filepath.Join(dir, "kubelet.yaml")
	if err := os.WriteFile(kubeletConfig, []byte(c.kubeletConfig(n, certPath, keyPath)), 0o644); err != nil {
		return err
	}
	return startDaemon(n.Name, n.Name+"-kubelet", nil, filepath.Join(c.opts.BinDir, "kubelet"),
		"--config", kubeletConfig,
		"--kubeconfig", kubeconfig,
		"--root-dir", n.KubeletRoot,
		"--hostname-override", n.Name,
		"--node-ip", n.Addr.String(),
		"--v", "1",
	)
}

// runcRoot is where runc keeps the node's containers' state.
func runcRoot(node string) string { return filepath.Join(runNodeDir(node), "runc") }

// containerdConfig is the node's containerd configuration: every path
// under the node's directories (runc's state too), the CRI plugin with runc (cgroupfs), the
// CNI plugins of hack/cluster and the local pause image.
//
// restrict_oom_score_adj is needed because root here lacks
// CAP_SYS_RESOURCE: without it runc fails every sandbox ("can't get final
// child's PID from pipe: EOF") when it tries to lower the OOM score.
func containerdConfig(n *Node, runc, cniDir string) string {
	dir, run := nodeDir(n.Name), runNodeDir(n.Name)
	return fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
  "io.containerd.nri.v1.nri",
]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.shim.v1.manager"]
  socket_dir = %[6]q

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %[7]q

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = %[8]q
        Root = %[11]q
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [%[9]q]
    conf_dir = %[10]q
`,
		filepath.Join(dir, "containerd"), filepath.Join(run, "containerd"),
		n.ContainerdSocket, n.ContainerdSocket+".ttrpc",
		filepath.Join(dir, "containerd-opt"), filepath.Join(run, "s"),
		PauseImage.Ref, runc, cniDir, filepath.Join(dir, "cni", "net.d"), runcRoot(n.Name))
}

// createCgroupRoot creates the node's cgroupRoot, /NAME, in every cgroup v1
// hierarchy: the kubelet creates its cgroups below it but expects it to
// exist. A new cpuset cgroup starts without CPUs and memory nodes; it gets
// its parent's.
func createCgroupRoot(name string) error {
	hierarchies, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return err
	}
	for _, h := range hierarchies {
		root := filepath.Join("/sys/fs/cgroup", h.Name())
		if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
			continue // the unified (v2) hierarchy of a hybrid setup
		}
		dir := filepath.Join(root, name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(root, f))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
				return fmt.Errorf("cgroup %s: %w", dir, err)
			}
		}
	}
	return nil
}

// kubeletConfig is the node's KubeletConfiguration. The machine runs
// cgroup v1, which the kubelet refuses unless failCgroupV1 is false, with
// the cgroupfs driver; each node has its own cgroupRoot, root and log
// directories so two kubelets share one machine.
func (c *Cluster) kubeletConfig(n *Node, certPath, keyPath string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /%[1]s
podLogsDir: %[2]q
containerRuntimeEndpoint: unix://%[3]s
address: %[4]s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: %[5]q
tlsPrivateKeyFile: %[6]q
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[7]q
authorization:
  mode: Webhook
clusterDomain: cluster.local
failSwapOn: false
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
`, n.Name, filepath.Join(nodeDir(n.Name), "pod-logs"), n.ContainerdSocket, n.Addr,
		certPath, keyPath, c.pki.caPath)
}

// configureNodes waits for the nodes to register and get their pod CIDRs,
// labels the control plane, writes each node's CNI configuration, starts
// flanneld and kube-proxy, and waits until every node is Ready.
func (c *Cluster) configureNodes(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	netConf := filepath.Join(StateDir, "flannel-net-conf.json")
	if err := os.WriteFile(netConf, []byte(fmt.Sprintf(`{"Network": %q, "EnableNFTables": false, "Backend": {"Type": "vxlan"}}`, PodNetwork)), 0o644); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		var node corev1.Node
		err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
			if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, &node); err != nil {
				return false, client.IgnoreNotFound(err)
			}
			return node.Spec.PodCIDR != "", nil
		})
		if err != nil {
			return fmt.Errorf("node %s did not register with a pod CIDR: %w", n.Name, err)
		}
		n.PodCIDR, err = netip.ParsePrefix(node.Spec.PodCIDR)
		if err != nil {
			return err
		}
		if n.ControlPlane {
			if err := c.labelNode(ctx, n.Name, LabelControlPlane, ""); err != nil {
				return err
			}
		}
		if err := writeCNIConfig(n); err != nil {
			return err
		}
		c.logf("%s: pod CIDR %s; starting flanneld (vxlan) and kube-proxy (%s mode)", n.Name, n.PodCIDR, n.ProxyMode)
		if err := startDaemon(n.Name, n.Name+"-flanneld", []string{"NODE_NAME=" + n.Name}, filepath.Join(c.opts.BinDir, "flanneld"),
			"--kube-subnet-mgr",
			"--kubeconfig-file", kubeconfigPath("flannel"),
			"--iface", "eth0",
			"--ip-masq",
			"--net-config-path", netConf,
			"--subnet-file", filepath.Join(nodeDir(n.Name), "flannel-subnet.env"),
		); err != nil {
			return err
		}
		proxyConfig := filepath.Join(nodeDir(n.Name), "kube-proxy.yaml")
		if err := os.WriteFile(proxyConfig, []byte(kubeProxyConfig(n)), 0o644); err != nil {
			return err
		}
		if err := startDaemon(n.Name, n.Name+"-kube-proxy", nil, filepath.Join(c.opts.BinDir, "kube-proxy"),
			"--config", proxyConfig); err != nil {
			return err
		}
	}
	for _, n := range c.Nodes {
		err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
			var node corev1.Node
			if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, &node); err != nil {
				return false, err
			}
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					return cond.Status == corev1.ConditionTrue, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("node %s not Ready: %w", n.Name, err)
		}
	}
	return nil
}

// kubeProxyConfig is the node's KubeProxyConfiguration. kube-proxy binds
// to the node's address, and leaves the machine-wide conntrack settings
// alone (zero values), which a network namespace may not change.
//
// The sync periods keep its tables steady but converging: in iptables
// mode every sync rewrites KUBE-SERVICES and KUBE-NODEPORTS in Go map
// order, so periodic syncs (30s by default) would reorder them with
// nothing changed. In nftables mode the sync period is only the retry
// interval after a failed sync (its periodic full sync is hourly), and a
// removed Service's flushed chains are deleted by the next sync at least a
// second later, which waits for another change.
func kubeProxyConfig(n *Node) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: %[1]s
iptables:
  syncPeriod: 1h
nftables:
  syncPeriod: 5s
hostnameOverride: %[2]s
bindAddress: %[3]s
healthzBindAddress: %[3]s:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: %[4]s
nodePortAddresses: ["primary"]
clientConnection:
  kubeconfig: %[5]q
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, n.ProxyMode, n.Name, n.Addr, PodNetwork, kubeconfigPath("kube-proxy"))
}

// writeCNIConfig writes the node's pod network: the bridge cni0 as the
// pods' default gateway, addresses from the node's pod CIDR, the flannel
// MTU, and portmap for hostPorts. flanneld routes the other nodes' pod
// CIDRs over VXLAN and masquerades pod traffic leaving the pod network.
func writeCNIConfig(n *Node) error {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       cniNetworkName,
		"plugins": []any{
			map[string]any{
				"type":             "bridge",
				"bridge":           "cni0",
				"isGateway":        true,
				"isDefaultGateway": true,
				"ipMasq":           false,
				"hairpinMode":      true,
				"mtu":              flannelMTU,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": n.PodCIDR.String()}}},
					"dataDir": filepath.Join(nodeDir(n.Name), "cni", "ipam"),
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	raw, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(nodeDir(n.Name), "cni", "net.d", "10-"+cniNetworkName+".conflist"), raw, 0o644)
}

// labelNode sets a label of a node, retrying on conflicts.
func (c *Cluster) labelNode(ctx context.Context, name, key, value string) error {
	for {
		var node corev1.Node
		if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, &node); err != nil {
			return err
		}
		if node.Labels == nil {
			node.Labels = map[string]string{}
		}
		node.Labels[key] = value
		err := c.Client.Update(ctx, &node)
		if !apierrors.IsConflict(err) {
			return err
		}
	}
}

// waitSocket waits until a unix socket accepts connections.
func waitSocket(ctx context.Context, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		conn, err := net.Dial("unix", path)
		if err != nil {
			return false, nil
		}
		conn.Close()
		return true, nil
	})
}
