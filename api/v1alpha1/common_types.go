package v1alpha1

// Chain names the iptables-style chain a rule belongs to.
// +kubebuilder:validation:Enum=Input;Forward;Output;PreRouting
type Chain string

const (
	ChainInput   Chain = "Input"
	ChainForward Chain = "Forward"
	ChainOutput  Chain = "Output"
	// ChainPreRouting sees the packets addressed to the node itself before
	// any DNAT (kube-proxy's NodePorts, hostPorts): their destination is
	// the address and port the client used. A packet it accepts still
	// meets Input or Forward afterwards.
	ChainPreRouting Chain = "PreRouting"
)

// Chains lists every chain in the order nodefw programs them, which is the
// order a packet meets them: PreRouting first.
var Chains = []Chain{ChainPreRouting, ChainInput, ChainForward, ChainOutput}

// Action is what a matching rule does to a packet, as an iptables target.
// +kubebuilder:validation:Enum=Accept;Drop;Reject
type Action string

const (
	ActionAccept Action = "Accept"
	ActionDrop   Action = "Drop"
	ActionReject Action = "Reject"
)

// ChainPolicy is a chain's default action, as set by `iptables -P`.
// +kubebuilder:validation:Enum=Accept;Drop
type ChainPolicy string

const (
	ChainPolicyAccept ChainPolicy = "Accept"
	ChainPolicyDrop   ChainPolicy = "Drop"
)

// Protocol is an IP protocol, as matched by `iptables -p`: one of the
// names below, or the decimal number (1-255) of a protocol without one.
// +kubebuilder:validation:MaxLength=8
// +kubebuilder:validation:Pattern=`^([A-Za-z][A-Za-z0-9]*|[0-9]{1,3})$`
type Protocol string

const (
	ProtocolTCP    Protocol = "TCP"
	ProtocolUDP    Protocol = "UDP"
	ProtocolSCTP   Protocol = "SCTP"
	ProtocolICMP   Protocol = "ICMP"
	ProtocolICMPv6 Protocol = "ICMPv6"
)

// HasPorts reports whether the protocol carries ports.
func (p Protocol) HasPorts() bool {
	return p == ProtocolTCP || p == ProtocolUDP || p == ProtocolSCTP
}

// ConnState is a conntrack state, as matched by `-m conntrack --ctstate`.
// +kubebuilder:validation:Enum=New;Established;Related;Invalid
type ConnState string

const (
	ConnStateNew         ConnState = "New"
	ConnStateEstablished ConnState = "Established"
	ConnStateRelated     ConnState = "Related"
	ConnStateInvalid     ConnState = "Invalid"
)

// PolicyMode says whether a policy's drops are enforced or only counted.
// +kubebuilder:validation:Enum=Enforce;Audit
type PolicyMode string

const (
	PolicyModeEnforce PolicyMode = "Enforce"
	PolicyModeAudit   PolicyMode = "Audit"
)

// PortRange is an inclusive range of destination ports, as `--dport port:endPort`.
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || self.endPort >= self.port",message="endPort must not be below port",fieldPath=".endPort"
type PortRange struct {
	// port is the first destination port of the range (iptables `--dport`).
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// endPort is the last destination port of the range, inclusive
	// (`--dport port:endPort`). Omitted means the single port `port`.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	EndPort int32 `json:"endPort,omitempty"`
}

// Last returns the last port of the range.
func (p PortRange) Last() int32 {
	if p.EndPort == 0 {
		return p.Port
	}
	return p.EndPort
}

// DefaultActions are the chain policies, as `iptables -P CHAIN TARGET`.
type DefaultActions struct {
	// preRouting is the policy of the PreRouting chain (`iptables -t mangle
	// -P PREROUTING`), for packets addressed to the node that no PreRouting
	// rule decides. Drop there drops them before kube-proxy's DNAT, whatever
	// Input and Forward would say: accept every port the node serves in
	// PreRouting first.
	// +optional
	PreRouting ChainPolicy `json:"preRouting,omitempty"`

	// input is the policy of the Input chain (`iptables -P INPUT`).
	// +optional
	Input ChainPolicy `json:"input,omitempty"`

	// forward is the policy of the Forward chain (`iptables -P FORWARD`).
	// +optional
	Forward ChainPolicy `json:"forward,omitempty"`

	// output is the policy of the Output chain (`iptables -P OUTPUT`).
	// +optional
	Output ChainPolicy `json:"output,omitempty"`

	// logDrops logs, rate-limited (10 a minute, burst 5), the packets that
	// this policy's Drop default actions drop, as JSON lines of the node's
	// agent with the rule "default", on the chains where this policy's
	// default action is the one in force.
	// +optional
	LogDrops bool `json:"logDrops,omitempty"`
}

// For returns the policy set for a chain, or "" when none is set.
func (d DefaultActions) For(c Chain) ChainPolicy {
	switch c {
	case ChainInput:
		return d.Input
	case ChainForward:
		return d.Forward
	case ChainOutput:
		return d.Output
	case ChainPreRouting:
		return d.PreRouting
	}
	return ""
}

// Set sets the policy of a chain.
func (d *DefaultActions) Set(c Chain, p ChainPolicy) {
	switch c {
	case ChainInput:
		d.Input = p
	case ChainForward:
		d.Forward = p
	case ChainOutput:
		d.Output = p
	case ChainPreRouting:
		d.PreRouting = p
	}
}

// Condition types shared by both kinds. They follow kstatus: Ready is
// always present; Reconciling and Stalled appear only while true, so Argo CD
// and Flux read InProgress, Current and Failed correctly.
const (
	ConditionReady       = "Ready"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
)

// Condition reasons shared by both kinds, CamelCase as Kubernetes
// conventions ask.
const (
	// ReasonApplied: the generation is in the kernel (of every matched node,
	// for a policy).
	ReasonApplied = "Applied"
	// ReasonProgressing: the generation is on its way to the kernel.
	ReasonProgressing = "Progressing"
	// ReasonApplyFailed: the kernel refused the ruleset (of some matched
	// node, for a policy); the previous one stays.
	ReasonApplyFailed = "ApplyFailed"
)
