package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodefw/nodefw/internal/localcluster"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// The test workload: a testserver pod on each node, two NodePort Services
// whose only backend is on the other node's pod (so a NodePort probe goes
// through the receiving node's kube-proxy and then over VXLAN), and a
// host-network testserver on each node on ports no policy lists.
const (
	workloadNamespace = "nodefw-e2e"
	podTCPPort        = 8080
	podUDPPort        = 8081
	// Host-network ports that no sample policy and no failsafe lists.
	unlistedTCPPort = 9000
	unlistedUDPPort = 9001
	// kube-proxy's health check listens on the node's address: a real
	// daemon's port that no policy lists either.
	kubeProxyHealthPort = 10256
	kubeletPort         = 10250
)

// nodePortService is a NodePort Service with one backend pod.
type nodePortService struct {
	name             string
	backend          string // pod name
	tcpPort, udpPort int32
}

var nodePortServices = []nodePortService{
	// Its backend is on the worker.
	{name: "to-worker", backend: "server-worker", tcpPort: 30080, udpPort: 30081},
	// Its backend is on the control plane.
	{name: "to-cp", backend: "server-cp", tcpPort: 30090, udpPort: 30091},
}

// workload is the running test workload.
type workload struct {
	c *localcluster.Cluster
	// pods maps a node's name to its testserver pod's name, IP and network
	// namespace (/proc/PID/ns/net of the pod's process).
	pods map[string]podInfo
}

type podInfo struct {
	name  string
	ip    netip.Addr
	netns string
}

func serverPodName(n *localcluster.Node) string {
	if n.ControlPlane {
		return "server-cp"
	}
	return "server-worker"
}

// startWorkload creates the workload and waits until its NodePorts answer
// through both nodes and its pods reach each other.
func startWorkload(t *testing.T, ctx context.Context, c *localcluster.Cluster) *workload {
	t.Helper()
	w := &workload{c: c, pods: map[string]podInfo{}}
	objs := []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: workloadNamespace}}}
	for _, n := range c.Nodes {
		objs = append(objs,
			testServerPod(serverPodName(n), n.Name, false, podTCPPort, podUDPPort),
			testServerPod("host-"+serverPodName(n), n.Name, true, unlistedTCPPort, unlistedUDPPort))
	}
	for _, s := range nodePortServices {
		objs = append(objs, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: workloadNamespace, Name: s.name},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeNodePort,
				Selector: map[string]string{"pod": s.backend},
				Ports: []corev1.ServicePort{
					{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: podTCPPort, TargetPort: intstr.FromInt32(podTCPPort), NodePort: s.tcpPort},
					{Name: "udp", Protocol: corev1.ProtocolUDP, Port: podUDPPort, TargetPort: intstr.FromInt32(podUDPPort), NodePort: s.udpPort},
				},
			},
		})
	}
	for _, o := range objs {
		if err := c.Client.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, n := range c.Nodes {
		for _, name := range []string{serverPodName(n), "host-" + serverPodName(n)} {
			var pod corev1.Pod
			err := poll(waitCtx, func() (bool, error) {
				if err := c.Client.Get(waitCtx, client.ObjectKey{Namespace: workloadNamespace, Name: name}, &pod); err != nil {
					return false, err
				}
				return pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != "", nil
			})
			if err != nil {
				t.Fatalf("pod %s not running: %v (phase %s, %v)\n%s", name, err, pod.Status.Phase, pod.Status.Conditions,
					localcluster.LogTail(n.Name+"-kubelet", 30))
			}
			if pod.Spec.HostNetwork {
				continue
			}
			pid, err := localcluster.FindProcess("/testserver", "HOSTNAME="+name)
			if err != nil {
				t.Fatal(err)
			}
			w.pods[n.Name] = podInfo{
				name:  name,
				ip:    netip.MustParseAddr(pod.Status.PodIP),
				netns: filepath.Join("/proc", strconv.Itoa(pid), "ns", "net"),
			}
		}
	}
	t.Logf("workload: pods %s %s on %s, %s %s on %s; NodePort Services %v",
		w.pods[c.Nodes[0].Name].name, w.pods[c.Nodes[0].Name].ip, c.Nodes[0].Name,
		w.pods[c.Nodes[1].Name].name, w.pods[c.Nodes[1].Name].ip, c.Nodes[1].Name, nodePortServices)
	// kube-proxy programs the Services and flannel the routes on its own
	// time.
	eventually(t, "the workload does not answer", time.Minute,
		append(w.nodePortProbes(netnstest.Accepted), w.podProbes(netnstest.Accepted)...)...)
	return w
}

func testServerPod(name, node string, hostNetwork bool, tcp, udp int) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: workloadNamespace, Name: name, Labels: map[string]string{"pod": name}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{corev1.LabelHostname: node},
			HostNetwork:                   hostNetwork,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			AutomountServiceAccountToken:  ptr.To(false),
			Containers: []corev1.Container{{
				Name:  "testserver",
				Image: localcluster.TestServerImage.Ref,
				Args:  []string{fmt.Sprintf("--tcp=%d", tcp), fmt.Sprintf("--udp=%d", udp)},
				SecurityContext: &corev1.SecurityContext{
					RunAsNonRoot:             ptr.To(true),
					AllowPrivilegeEscalation: ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
			}},
		},
	}
}

// nodePortProbes are TCP and UDP probes from the machine (a client on the
// LAN) to every NodePort of every node, each answered by the Service's
// backend.
func (w *workload) nodePortProbes(want netnstest.Verdict) []probe {
	var out []probe
	for _, n := range w.c.Nodes {
		for _, s := range nodePortServices {
			local := serverPodName(n) == s.backend
			via := fmt.Sprintf("NodePort %s of %s through kube-proxy %s to pod %s", s.name, n.Name, n.ProxyMode, s.backend)
			out = append(out,
				probe{from: "LAN client", proto: "tcp", to: netip.AddrPortFrom(n.Addr, uint16(s.tcpPort)), via: via, want: want, answer: s.backend, local: local},
				probe{from: "LAN client", proto: "udp", to: netip.AddrPortFrom(n.Addr, uint16(s.udpPort)), via: via, want: want, local: local})
		}
	}
	return out
}

// podProbes are TCP and UDP probes between the pods of the two nodes, in
// both directions: pod-to-pod traffic over flannel's VXLAN.
func (w *workload) podProbes(want netnstest.Verdict) []probe {
	var out []probe
	for _, from := range w.c.Nodes {
		for _, to := range w.c.Nodes {
			if from == to {
				continue
			}
			src, dst := w.pods[from.Name], w.pods[to.Name]
			via := fmt.Sprintf("pod %s on %s over VXLAN", dst.name, to.Name)
			out = append(out,
				probe{from: "pod " + src.name, netns: src.netns, proto: "tcp", to: netip.AddrPortFrom(dst.ip, podTCPPort), via: via, want: want, answer: dst.name},
				probe{from: "pod " + src.name, netns: src.netns, proto: "udp", to: netip.AddrPortFrom(dst.ip, podUDPPort), via: via, want: want})
		}
	}
	return out
}

// unlistedProbes are probes from the machine to ports of every node that
// no policy lists: the host-network testserver's and kube-proxy's health
// check.
func (w *workload) unlistedProbes(want netnstest.Verdict) []probe {
	var out []probe
	for _, n := range w.c.Nodes {
		out = append(out,
			probe{from: "LAN client", proto: "tcp", to: netip.AddrPortFrom(n.Addr, unlistedTCPPort), via: "unlisted host port of " + n.Name, want: want},
			probe{from: "LAN client", proto: "udp", to: netip.AddrPortFrom(n.Addr, unlistedUDPPort), via: "unlisted host port of " + n.Name, want: want},
			probe{from: "LAN client", proto: "tcp", to: netip.AddrPortFrom(n.Addr, kubeProxyHealthPort), via: "kube-proxy health check of " + n.Name, want: want})
	}
	return out
}

// listedProbes are probes to node ports the sample policies accept: the
// kubelets and the API server.
func (w *workload) listedProbes() []probe {
	var out []probe
	for _, n := range w.c.Nodes {
		out = append(out, probe{from: "LAN client", proto: "tcp", to: netip.AddrPortFrom(n.Addr, kubeletPort), via: "kubelet of " + n.Name, want: netnstest.Accepted})
	}
	cp := w.c.ControlPlane
	return append(out, probe{from: "LAN client", proto: "tcp", to: netip.AddrPortFrom(cp.Addr, localcluster.APIServerPort), via: "API server", want: netnstest.Accepted})
}

func poll(ctx context.Context, cond func() (bool, error)) error {
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
