package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeFirewallConfigName is the name of the one NodeFirewallConfig that
// the controller, the agents and the failsafe warning read.
const NodeFirewallConfigName = "default"

// Condition reasons of a NodeFirewallConfig.
const (
	// ReasonConfigValid: the controller checked the generation and it is
	// the one the controller and the agents use.
	ReasonConfigValid = "Valid"
	// ReasonInvalidConfig: the generation fails the checks the controller
	// and the agents make; they keep using the last good generation they
	// read (or, having read none, their flags).
	ReasonInvalidConfig = "InvalidConfig"
)

// Failsafe is traffic every node accepts ahead of all policy rules: a
// protocol, destination ports and, optionally, the addresses it may come
// from or go to.
// +kubebuilder:validation:XValidation:rule="self.protocol in ['TCP', 'UDP', 'SCTP']",message="protocol must be TCP, UDP or SCTP: failsafes are ports",fieldPath=".protocol"
// +kubebuilder:validation:XValidation:rule="!has(self.sources) || !has(self.destinations) || size(self.sources) == 0 || size(self.destinations) == 0 || self.sources.exists(s, self.destinations.exists(d, (isCIDR(s) ? cidr(s).ip() : ip(s)).family() == (isCIDR(d) ? cidr(d).ip() : ip(d)).family()))",message="sources and destinations must have an IP family in common, or the failsafe matches nothing"
type Failsafe struct {
	// protocol is TCP, UDP or SCTP (`-p`).
	// +required
	Protocol Protocol `json:"protocol"`

	// ports are the destination ports accepted (`--dport`), each a port or
	// an inclusive range.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Ports []PortRange `json:"ports"`

	// sources, when set, accept the ports only from these IPv4 or IPv6
	// addresses or CIDRs (`-s`), e.g. etcd only from the control plane.
	// Omitted means from anywhere.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="self.all(a, isIP(a) || isCIDR(a))",message="sources must be IP addresses or CIDRs"
	Sources []string `json:"sources,omitempty"`

	// destinations, when set, accept the ports only to these IPv4 or IPv6
	// addresses or CIDRs (`-d`). Omitted means to any address.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="self.all(a, isIP(a) || isCIDR(a))",message="destinations must be IP addresses or CIDRs"
	Destinations []string `json:"destinations,omitempty"`
}

// Failsafes are accepted on every node before any policy rule, so that no
// policy can cut a node off from its operators or its control plane. A
// policy's Drop or Reject rule that covers one is reported
// (FailsafeShadowed) and never drops that traffic.
type Failsafes struct {
	// inbound are accepted on the Input chain. Omitted means the defaults:
	// TCP 22 (SSH), 6443 (API server), 2379-2380 (etcd), 10250 (kubelet)
	// and UDP 67-68 (DHCP); an empty list means none.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:default={{protocol: TCP, ports: {{port: 22}}}, {protocol: TCP, ports: {{port: 6443}}}, {protocol: TCP, ports: {{port: 2379, endPort: 2380}}}, {protocol: TCP, ports: {{port: 10250}}}, {protocol: UDP, ports: {{port: 67, endPort: 68}}}}
	Inbound []Failsafe `json:"inbound"`

	// outbound are accepted on the Output chain. Omitted means the
	// defaults: UDP and TCP 53 (DNS), TCP 6443 (API server) and UDP 67-68
	// (DHCP); an empty list means none.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:default={{protocol: UDP, ports: {{port: 53}}}, {protocol: TCP, ports: {{port: 53}}}, {protocol: TCP, ports: {{port: 6443}}}, {protocol: UDP, ports: {{port: 67, endPort: 68}}}}
	Outbound []Failsafe `json:"outbound"`
}

// AgentSettings are how every node agent works; each agent applies a
// change without a restart.
type AgentSettings struct {
	// resyncPeriod is how often each agent compares its kernel table with
	// the desired ruleset and repairs it, between 1s and 1h.
	// +optional
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="resyncPeriod must be between 1s and 1h"
	ResyncPeriod *metav1.Duration `json:"resyncPeriod,omitempty"`

	// confirmTimeout is how long, after programming a new ruleset, the
	// control plane may stay unreachable before the agent restores the
	// previous ruleset (commit confirmed), at most 5m. 0s disables the
	// check.
	// +optional
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('5m')",message="confirmTimeout must be between 0s and 5m"
	ConfirmTimeout *metav1.Duration `json:"confirmTimeout,omitempty"`

	// confirmEndpoint is the host:port each node must still reach after a
	// new ruleset, e.g. `10.0.0.10:6443`. Omitted means the API server
	// address of each agent's kubeconfig (in a cluster, the kubernetes
	// Service).
	// +optional
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:Pattern=`^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$`
	ConfirmEndpoint string `json:"confirmEndpoint,omitempty"`

	// setLookups compiles runs of simple rules into lookups in
	// concatenated sets, so that a packet's cost does not grow with the
	// number of rules. false programs one nftables rule per rule,
	// evaluated in order as iptables does.
	// +optional
	// +kubebuilder:default=true
	SetLookups *bool `json:"setLookups,omitempty"`
}

// NodeFirewallConfigSpec are nodefw's cluster-wide settings.
type NodeFirewallConfigSpec struct {
	// failsafes are the ports every node accepts before any rule. The
	// agents program them, the controller reports the policy rules they
	// shadow, and the failsafe-warning admission policy warns about those
	// rules when a policy is written.
	// +optional
	// +kubebuilder:default={}
	Failsafes Failsafes `json:"failsafes"`

	// agent are the settings of every node agent.
	// +optional
	// +kubebuilder:default={}
	Agent AgentSettings `json:"agent"`
}

// NodeFirewallConfigStatus is written by the controller.
type NodeFirewallConfigStatus struct {
	// observedGeneration is the generation the controller last checked.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready is True (reason Valid) when the generation passes
	// the checks and is in use, and False with Stalled True (reason
	// InvalidConfig) when it fails them and the last good one stays in
	// use.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NodeFirewallConfig holds nodefw's cluster-wide settings: the failsafe
// ports and how the node agents work. There is one, named default; the
// controller, every agent and the failsafe warning all read it, so they
// cannot disagree. Without it they use their command-line flags.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=nfc
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="there is one NodeFirewallConfig and it is named default"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeFirewallConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the settings, written by the cluster's operators.
	// +optional
	// +kubebuilder:default={}
	Spec NodeFirewallConfigSpec `json:"spec"`

	// status is written by the controller.
	// +optional
	Status NodeFirewallConfigStatus `json:"status,omitempty"`
}

// NodeFirewallConfigList is a list of NodeFirewallConfig.
// +kubebuilder:object:root=true
type NodeFirewallConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeFirewallConfig `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NodeFirewallConfig{}, &NodeFirewallConfigList{})
}
