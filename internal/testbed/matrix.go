package testbed

import "strings"

// Port is a probed port and what it is for.
type Port struct {
	Proto Proto
	Port  uint16
	Note  string
}

// The ports of the classic hardening table that config/samples implements,
// and their neighbours that no policy opens.
//
// Every port is a socket bound on the node itself: nothing here rewrites
// destinations as kube-proxy does, so a port in the NodePort range is just
// a port of the node. The worker sample accepts that range on Input only
// for kube-proxy's IPVS mode, which rewrites NodePorts after Input; the
// control-plane sample does not. NodePorts behind an emulated kube-proxy
// are probed through Cluster.EmulateNodePort.
var (
	// ControlPlaneAccepted are the ports a control-plane node accepts.
	ControlPlaneAccepted = []Port{
		{UDP, 8472, "flannel VXLAN"},
		{TCP, 6443, "kube-apiserver"},
		{TCP, 2379, "etcd client"},
		{TCP, 2380, "etcd peer"},
		{TCP, 10250, "kubelet"},
		{TCP, 10251, "kube-scheduler"},
		{TCP, 10252, "kube-controller-manager"},
	}
	// ControlPlaneDropped are ports next to them, and others nobody opens.
	ControlPlaneDropped = []Port{
		{TCP, 2378, "below etcd"},
		{TCP, 2381, "above etcd"},
		{TCP, 10249, "below kubelet"},
		{TCP, 10253, "above controller-manager"},
		{TCP, 30080, "node's own port in the NodePort range"},
		{TCP, 8080, "not listed"},
	}
	// WorkerAccepted are the ports a worker accepts.
	WorkerAccepted = []Port{
		{UDP, 8472, "flannel VXLAN"},
		{TCP, 10250, "kubelet"},
		{TCP, 30000, "NodePort range start, Input's IPVS accept"},
		{TCP, 32767, "NodePort range end, Input's IPVS accept"},
	}
	// WorkerDropped are ports a worker drops.
	WorkerDropped = []Port{
		{TCP, 29999, "below NodePort range"},
		{TCP, 8080, "not listed"},
	}
)

// Checks builds one check per port, from one host to another, all
// expecting want.
func (c *Cluster) Checks(from, to string, want Verdict, ports ...Port) []Check {
	f, t := c.Host(from), c.Host(to)
	out := make([]Check, 0, len(ports))
	for _, p := range ports {
		out = append(out, Check{From: f, To: t, Proto: p.Proto, Port: p.Port, Want: want, Note: p.Note})
	}
	return out
}

// PodCheck is a TCP probe from one pod (or node) to another pod's
// listener, which crosses the nodes' Forward chains.
func (c *Cluster) PodCheck(from, to string, want Verdict) Check {
	note := "pod to pod, forwarded"
	if !strings.HasSuffix(from, "/pod") {
		note = "node to pod"
	}
	return Check{From: c.Host(from), To: c.Host(to), Proto: TCP, Port: PodTCPPort, Want: want, Note: note}
}

// SeedChecks are the probes of the hardening table with the samples
// applied: worker-1 to cp-1, cp-1 to worker-1, and a pod on worker-1 to a
// pod on worker-2. With real node networking, UDP 8472 is flannel's VXLAN
// socket: it is probed with pod traffic between the nodes, which VXLAN
// carries into cp-1 and worker-1.
func (c *Cluster) SeedChecks() []Check {
	cpAccepted, workerAccepted := ControlPlaneAccepted, WorkerAccepted
	if c.kubeNetworking() {
		cpAccepted, workerAccepted = withoutVXLAN(cpAccepted), withoutVXLAN(workerAccepted)
	}
	var out []Check
	out = append(out, c.Checks("worker-1", "cp-1", Accepted, cpAccepted...)...)
	out = append(out, c.Checks("worker-1", "cp-1", Dropped, ControlPlaneDropped...)...)
	out = append(out, c.Checks("cp-1", "worker-1", Accepted, workerAccepted...)...)
	out = append(out, c.Checks("cp-1", "worker-1", Dropped, WorkerDropped...)...)
	if c.kubeNetworking() {
		return append(out, c.VXLANCheck("worker-1/pod", "cp-1/pod", Accepted), c.VXLANCheck("cp-1/pod", "worker-1/pod", Accepted),
			c.VXLANCheck("worker-1/pod", "worker-2/pod", Accepted))
	}
	return append(out, c.PodCheck("worker-1/pod", "worker-2/pod", Accepted))
}

// VXLANCheck is a TCP probe from one pod to another's listener on another
// node, carried by flannel's VXLAN: the receiving node's Input sees it as
// UDP 8472 first.
func (c *Cluster) VXLANCheck(from, to string, want Verdict) Check {
	node, _ := strings.CutSuffix(to, "/pod")
	return Check{From: c.Host(from), To: c.Host(to), Proto: TCP, Port: PodTCPPort, Want: want,
		Note: "pod to pod over flannel VXLAN (udp/8472 into " + node + ")"}
}

// withoutVXLAN leaves UDP 8472 out of ports.
func withoutVXLAN(ports []Port) []Port {
	var out []Port
	for _, p := range ports {
		if p.Proto != UDP || p.Port != 8472 {
			out = append(out, p)
		}
	}
	return out
}

// Probe connects from one host to another ("cp-1", "worker-1/pod") and
// reports what happened, waiting ProbeTimeout for an answer.
func (c *Cluster) Probe(from, to string, proto Proto, port uint16) (Verdict, error) {
	return Probe(c.Host(from).NS, proto, c.Host(to).Addr, port, ProbeTimeout)
}
