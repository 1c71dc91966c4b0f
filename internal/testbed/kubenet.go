package testbed

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

// Real node networking (Options.KubeNetworkBinDir): every node runs
// flanneld with the vxlan backend and kube-proxy, as processes in its
// network namespace. There is no kubelet and no kube-controller-manager:
// the nodes' pod CIDRs, which flanneld leases its subnets from, are set
// when the Node objects are created, and Services get their EndpointSlices
// from CreateNodePortService.

// flannelNetConf is flanneld's network configuration: the pod network, one
// /24 per node, VXLAN on UDP 8472 (the kernel's default port, flannel's on
// Linux). Its iptables rules stay in iptables, as in the local cluster.
var flannelNetConf = fmt.Sprintf(`{"Network": %q, "EnableNFTables": false, "Backend": {"Type": "vxlan"}}`, PodNetwork)

// flannelDevice is the VXLAN device flanneld creates in every node.
const flannelDevice = "flannel.1"

// kubeProxyMetricsAddr is where kube-proxy serves metrics: not 10249, its
// default, which the nodes' listeners hold.
const kubeProxyMetricsAddr = "127.0.0.1:10264"

// kubeNetworking reports whether the nodes run flanneld and kube-proxy.
func (c *Cluster) kubeNetworking() bool { return c.opts.KubeNetworkBinDir != "" }

// nodeKubeconfig writes a kubeconfig for processes inside the nodes: the
// admin's, through the control plane's tcp/6443 on the LAN (the API server
// itself listens on the machine's loopback), verifying the API server's
// certificate for the name it has there.
func (c *Cluster) nodeKubeconfig() (string, error) {
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		return "", err
	}
	cps := c.ControlPlaneAddrs()
	if len(cps) == 0 {
		return "", fmt.Errorf("the topology has no control-plane node")
	}
	for _, cluster := range cfg.Clusters {
		u, err := url.Parse(cluster.Server)
		if err != nil {
			return "", err
		}
		cluster.TLSServerName = u.Hostname()
		cluster.Server = "https://" + netip.AddrPortFrom(cps[0], APIServerPort).String()
	}
	path := filepath.Join(c.Dir, "node-kubeconfig")
	return path, clientcmd.WriteToFile(*cfg, path)
}

// startKubeNetworking starts flanneld and kube-proxy in every node and
// waits until flannel routes every other node's pod CIDR over VXLAN.
func (c *Cluster) startKubeNetworking(ctx context.Context) error {
	bin := c.opts.KubeNetworkBinDir
	for _, b := range []string{"flanneld", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return fmt.Errorf("%s: %w (run `make cluster-tools`)", b, err)
		}
	}
	kubeconfig, err := c.nodeKubeconfig()
	if err != nil {
		return err
	}
	netConf := filepath.Join(c.Dir, "flannel-net-conf.json")
	if err := os.WriteFile(netConf, []byte(flannelNetConf), 0o644); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		n.Flanneld, err = StartProcess(c.Dir, "flanneld-"+n.Name, "nsenter", "--net="+n.NS.Path(), "--",
			"env", "NODE_NAME="+n.Name, filepath.Join(bin, "flanneld"),
			"--kube-subnet-mgr",
			"--kubeconfig-file", kubeconfig,
			"--iface", "eth0",
			"--net-config-path", netConf,
			"--subnet-file", filepath.Join(c.Dir, "flannel-subnet-"+n.Name+".env"))
		if err != nil {
			return err
		}
		config := filepath.Join(c.Dir, "kube-proxy-"+n.Name+".yaml")
		if err := os.WriteFile(config, []byte(kubeProxyConfig(n, kubeconfig)), 0o644); err != nil {
			return err
		}
		n.KubeProxy, err = StartProcess(c.Dir, "kube-proxy-"+n.Name, "nsenter", "--net="+n.NS.Path(), "--",
			filepath.Join(bin, "kube-proxy"), "--config", config)
		if err != nil {
			return err
		}
	}
	return c.waitFlannelRoutes(ctx)
}

// kubeProxyConfig is a node's KubeProxyConfiguration: bound to the node's
// address, NodePorts on it only, and the machine-wide conntrack settings
// left alone (zero values), which a network namespace may not change.
func kubeProxyConfig(n *Node, kubeconfig string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: %[1]s
hostnameOverride: %[2]s
bindAddress: %[3]s
healthzBindAddress: %[3]s:10256
metricsBindAddress: %[4]s
clusterCIDR: %[5]s
nodePortAddresses: ["primary"]
clientConnection:
  kubeconfig: %[6]q
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, n.ProxyMode, n.Name, n.Addr, kubeProxyMetricsAddr, PodNetwork, kubeconfig)
}

// waitFlannelRoutes waits until every node routes every other node's pod
// CIDR through flannel's VXLAN device: each flanneld has leased its
// subnet and learnt the others'.
func (c *Cluster) waitFlannelRoutes(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var missing []string
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		missing = nil
		for _, n := range c.Nodes {
			out, err := n.NS.Exec("ip", "route", "show", "dev", flannelDevice)
			if err != nil {
				out = ""
			}
			for _, other := range c.Nodes {
				if other != n && !strings.Contains(out, other.PodCIDR.String()+" ") {
					missing = append(missing, fmt.Sprintf("%s to %s", n.Name, other.PodCIDR))
				}
			}
		}
		return len(missing) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("flannel routes missing (%s): %w\n%s", strings.Join(missing, ", "), err, c.ProcessLogTails(10))
	}
	return nil
}

// CreateNodePortService creates a TCP NodePort Service whose one endpoint
// is the pod of node backend on PodTCPPort, and its EndpointSlice, which
// the endpoint controllers would write in a full cluster. Every node's
// kube-proxy then DNATs nodePort to that pod.
func (c *Cluster) CreateNodePortService(ctx context.Context, name string, nodePort uint16, backend string) error {
	n := c.Node(backend)
	if n == nil {
		return fmt.Errorf("no node %q", backend)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceDefault, Name: name},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeNodePort,
			Ports: []corev1.ServicePort{{
				Name: "tcp", Protocol: corev1.ProtocolTCP, Port: int32(PodTCPPort),
				TargetPort: intstr.FromInt32(int32(PodTCPPort)), NodePort: int32(nodePort),
			}},
		},
	}
	if err := c.Client.Create(ctx, svc); err != nil {
		return fmt.Errorf("creating Service %s: %w", name, err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceDefault, Name: name, Labels: map[string]string{
			discoveryv1.LabelServiceName: name,
			discoveryv1.LabelManagedBy:   "nodefw-testbed",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{n.Pod.Addr.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To(n.Name),
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("tcp"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(PodTCPPort))}},
	}
	if err := c.Client.Create(ctx, slice); err != nil {
		return fmt.Errorf("creating EndpointSlice %s: %w", name, err)
	}
	return nil
}

// NodePortCheck is a TCP probe of a NodePort of node to, from host from.
func (c *Cluster) NodePortCheck(from, to string, nodePort uint16, want Verdict, note string) Check {
	return Check{From: c.Host(from), To: c.Host(to), Proto: TCP, Port: nodePort, Want: want, Note: note}
}
