package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Rule is one firewall rule: the match of an iptables rule plus its target.
// A packet takes the action of the first rule that matches it, as in an
// iptables chain.
// Each rule below reads only the fields it needs, and the rules on one
// field are one rule: the API server evaluates every rule of every item
// on each write of a policy, its status included, and each field read of
// a rule costs a copy of the rule's schema, so a 500-rule policy's writes
// are about twice as costly with the checks spread over more rules.
// +kubebuilder:validation:XValidation:rule=`size(self.?ports.orValue([])) == 0 || self.?protocol.orValue("") in ['TCP', 'UDP', 'SCTP']`,message="ports require protocol TCP, UDP or SCTP",fieldPath=".ports"
// +kubebuilder:validation:XValidation:rule="!has(self.inInterface) || self.chain != 'Output'",message="inInterface is not allowed on the Output chain (iptables forbids -i in OUTPUT)",fieldPath=".inInterface"
// +kubebuilder:validation:XValidation:rule="!has(self.outInterface) || !(self.chain in ['Input', 'PreRouting'])",messageExpression="self.chain == 'Input' ? 'outInterface is not allowed on the Input chain (iptables forbids -o in INPUT)' : 'outInterface is not allowed on the PreRouting chain: packets there are not routed yet, so they have no output interface (iptables forbids -o in PREROUTING)'",fieldPath=".outInterface"
// +kubebuilder:validation:XValidation:rule=`size(self.?sourcePorts.orValue([])) == 0 || self.?protocol.orValue("") in ['TCP', 'UDP', 'SCTP']`,message="sourcePorts require protocol TCP, UDP or SCTP",fieldPath=".sourcePorts"
// +kubebuilder:validation:XValidation:rule=`size(self.?icmpTypes.orValue([])) == 0 || (self.?protocol.orValue("") == 'ICMP' && self.icmpTypes.all(t, t.matches('^[0-9]') || t in ['EchoReply', 'DestinationUnreachable', 'NetworkUnreachable', 'HostUnreachable', 'ProtocolUnreachable', 'PortUnreachable', 'FragmentationNeeded', 'SourceRouteFailed', 'NetworkUnknown', 'HostUnknown', 'NetworkProhibited', 'HostProhibited', 'TOSNetworkUnreachable', 'TOSHostUnreachable', 'CommunicationProhibited', 'HostPrecedenceViolation', 'PrecedenceCutoff', 'SourceQuench', 'Redirect', 'NetworkRedirect', 'HostRedirect', 'TOSNetworkRedirect', 'TOSHostRedirect', 'EchoRequest', 'RouterAdvertisement', 'RouterSolicitation', 'TimeExceeded', 'TTLZeroDuringTransit', 'TTLZeroDuringReassembly', 'ParameterProblem', 'IPHeaderBad', 'RequiredOptionMissing', 'TimestampRequest', 'TimestampReply', 'AddressMaskRequest', 'AddressMaskReply'])) || (self.?protocol.orValue("") == 'ICMPv6' && self.icmpTypes.all(t, t.matches('^[0-9]') || t in ['DestinationUnreachable', 'NoRoute', 'CommunicationProhibited', 'BeyondScope', 'AddressUnreachable', 'PortUnreachable', 'FailedPolicy', 'RejectRoute', 'PacketTooBig', 'TimeExceeded', 'TTLZeroDuringTransit', 'TTLZeroDuringReassembly', 'ParameterProblem', 'BadHeader', 'UnknownHeaderType', 'UnknownOption', 'EchoRequest', 'EchoReply', 'MLDListenerQuery', 'MLDListenerReport', 'MLDListenerDone', 'RouterSolicitation', 'RouterAdvertisement', 'NeighbourSolicitation', 'NeighbourAdvertisement', 'NeighborSolicitation', 'NeighborAdvertisement', 'Redirect']))`,messageExpression=`!(self.?protocol.orValue("") in ['ICMP', 'ICMPv6']) ? 'icmpTypes require protocol ICMP or ICMPv6' : self.protocol == 'ICMP' ? 'icmpTypes of protocol ICMP must be numbers, type or type/code, or IPv4 type names as iptables --icmp-type spells them, in CamelCase: EchoRequest, EchoReply, DestinationUnreachable, FragmentationNeeded, TimeExceeded, Redirect, ... (see kubectl explain nodefirewallpolicy.spec.rules.icmpTypes)' : 'icmpTypes of protocol ICMPv6 must be numbers, type or type/code, or ICMPv6 type names as ip6tables --icmpv6-type spells them, in CamelCase: EchoRequest, EchoReply, DestinationUnreachable, PacketTooBig, TimeExceeded, ParameterProblem, ... (see kubectl explain nodefirewallpolicy.spec.rules.icmpTypes)'`,fieldPath=".icmpTypes"
// +kubebuilder:validation:XValidation:rule=`!has(self.rejectWith) || (self.action == 'Reject' && (self.rejectWith != 'TCPReset' || self.?protocol.orValue("") == 'TCP'))`,messageExpression=`self.action != 'Reject' ? 'rejectWith requires action Reject' : 'rejectWith TCPReset requires protocol TCP (iptables takes --reject-with tcp-reset only with -p tcp)'`,fieldPath=".rejectWith"
// +kubebuilder:validation:XValidation:rule="self.?log.orValue(false) ? !has(self.limit) : !(has(self.logLabel) || has(self.logRatePerMinute) || has(self.logBurst))",messageExpression="self.?log.orValue(false) ? 'log cannot be combined with limit: the log rule would keep a rate limit of its own and match other packets' : 'logLabel, logRatePerMinute and logBurst require log: true'",fieldPath=".log"
// +kubebuilder:validation:XValidation:rule="size(self.?from.orValue([])) == 0 || size(self.?sources.orValue([])) == 0",message="a rule takes sources or from, not both: put literal addresses in a NodeFirewallAddressSet and name it in from",fieldPath=".from"
// +kubebuilder:validation:XValidation:rule="size(self.?to.orValue([])) == 0 || size(self.?destinations.orValue([])) == 0",message="a rule takes destinations or to, not both: put literal addresses in a NodeFirewallAddressSet and name it in to",fieldPath=".to"
type Rule struct {
	// name identifies the rule within its policy. It appears in logs, metrics
	// and the rendered ruleset.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// chain is the chain the rule is appended to: Input (iptables INPUT),
	// Forward (FORWARD), Output (OUTPUT) or PreRouting (PREROUTING of the
	// mangle table). PreRouting sees only packets addressed to the node
	// itself, before kube-proxy's DNAT, so its ports are the NodePort,
	// hostPort or external IP port the client used; Input and Forward see
	// them after DNAT, at the backend's address and port. Accept in
	// PreRouting means "not dropped here": Input or Forward still decide.
	// +required
	Chain Chain `json:"chain"`

	// action is the rule's target: Accept (ACCEPT), Drop (DROP) or Reject
	// (REJECT, answered with an ICMP port-unreachable as iptables does by
	// default).
	// +required
	Action Action `json:"action"`

	// protocol is the IP protocol (`-p`): TCP, UDP, SCTP, ICMP, ICMPv6,
	// IGMP, GRE, ESP, AH, OSPF, PIM, VRRP, L2TP, or the number of another
	// protocol as a string, such as "41" (`-p 41`). Omitted means any
	// protocol.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self in ['TCP', 'UDP', 'SCTP', 'ICMP', 'ICMPv6', 'IGMP', 'GRE', 'ESP', 'AH', 'OSPF', 'PIM', 'VRRP', 'L2TP'] || (self.matches('^[1-9][0-9]{0,2}$') && int(self) <= 255 && !(int(self) in [1, 2, 6, 17, 47, 50, 51, 58, 89, 103, 112, 115, 132]))",message="protocol must be TCP, UDP, SCTP, ICMP, ICMPv6, IGMP, GRE, ESP, AH, OSPF, PIM, VRRP, L2TP or the number (1-255) of another IP protocol; protocols with a name are written by name"
	Protocol Protocol `json:"protocol,omitempty"`

	// ports are the destination ports (`--dport`, or `-m multiport --dports`
	// with `port:endPort` ranges). Omitted means any port. Only with protocol
	// TCP, UDP or SCTP.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Ports []PortRange `json:"ports,omitempty"`

	// sources are the source addresses or CIDRs (`-s`), IPv4 or IPv6.
	// Omitted means any source.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="self.all(a, isIP(a) || isCIDR(a))",message="sources must be IP addresses or CIDRs"
	Sources []string `json:"sources,omitempty"`

	// destinations are the destination addresses or CIDRs (`-d`), IPv4 or
	// IPv6. Omitted means any destination.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="self.all(a, isIP(a) || isCIDR(a))",message="destinations must be IP addresses or CIDRs"
	Destinations []string `json:"destinations,omitempty"`

	// inInterface is the interface the packet arrived on (`-i`). A trailing
	// `+` matches every interface whose name starts with the rest, as in
	// iptables. Not allowed on the Output chain.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:Pattern=`^([A-Za-z0-9_.@:-]{1,15}\+?|\+)$`
	InInterface string `json:"inInterface,omitempty"`

	// outInterface is the interface the packet leaves by (`-o`), with the
	// same `+` wildcard. Not allowed on the Input and PreRouting chains.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:Pattern=`^([A-Za-z0-9_.@:-]{1,15}\+?|\+)$`
	OutInterface string `json:"outInterface,omitempty"`

	// states are conntrack states (`-m conntrack --ctstate`). The rule
	// matches a packet in any of them. Omitted means any state.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=4
	States []ConnState `json:"states,omitempty"`

	// log logs matching packets, rate-limited, as one JSON line each on the
	// standard output of the node's agent, naming the policy, the rule and
	// the action (as an NFLOG rule before the target). Not with limit.
	// +optional
	Log bool `json:"log,omitempty"`

	// Log settings, only with log: true.

	// logLabel is a short label carried in every log line of the rule,
	// e.g. `ssh-scan`. Only with log.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	LogLabel string `json:"logLabel,omitempty"`

	// logRatePerMinute is how many matching packets a minute are logged at
	// most (`-m limit --limit N/minute`); omitted means 10. Only with log.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=60000
	LogRatePerMinute int32 `json:"logRatePerMinute,omitempty"`

	// logBurst is how many packets are logged in a burst before the rate
	// applies (`--limit-burst`); omitted means 5. Only with log.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	LogBurst int32 `json:"logBurst,omitempty"`

	// Matches and answers of iptables' extensions.

	// sourcePorts are the source ports (`--sport`, or `-m multiport
	// --sports` with `port:endPort` ranges). Omitted means any source port.
	// Only with protocol TCP, UDP or SCTP.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	SourcePorts []SourcePortRange `json:"sourcePorts,omitempty"`

	// icmpTypes are ICMP or ICMPv6 types, each with or without a code
	// (`--icmp-type`, `--icmpv6-type`); the rule matches any of them.
	// Only with protocol ICMP or ICMPv6. Names are iptables' in CamelCase.
	// ICMP: EchoReply, DestinationUnreachable, NetworkUnreachable,
	// HostUnreachable, ProtocolUnreachable, PortUnreachable,
	// FragmentationNeeded, SourceRouteFailed, NetworkUnknown, HostUnknown,
	// NetworkProhibited, HostProhibited, TOSNetworkUnreachable,
	// TOSHostUnreachable, CommunicationProhibited, HostPrecedenceViolation,
	// PrecedenceCutoff, SourceQuench, Redirect, NetworkRedirect,
	// HostRedirect, TOSNetworkRedirect, TOSHostRedirect, EchoRequest,
	// RouterAdvertisement, RouterSolicitation, TimeExceeded,
	// TTLZeroDuringTransit, TTLZeroDuringReassembly, ParameterProblem,
	// IPHeaderBad, RequiredOptionMissing, TimestampRequest, TimestampReply,
	// AddressMaskRequest, AddressMaskReply. ICMPv6: DestinationUnreachable,
	// NoRoute, CommunicationProhibited, BeyondScope, AddressUnreachable,
	// PortUnreachable, FailedPolicy, RejectRoute, PacketTooBig, TimeExceeded,
	// TTLZeroDuringTransit, TTLZeroDuringReassembly, ParameterProblem,
	// BadHeader, UnknownHeaderType, UnknownOption, EchoRequest, EchoReply,
	// MLDListenerQuery, MLDListenerReport, MLDListenerDone,
	// RouterSolicitation, RouterAdvertisement, NeighbourSolicitation,
	// NeighbourAdvertisement (or Neighbor...), Redirect. Numbers are "type"
	// or "type/code", as in "3/4".
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	ICMPTypes []ICMPType `json:"icmpTypes,omitempty"`

	// rejectWith is how a Reject rule answers (`--reject-with`):
	// PortUnreachable (the default), TCPReset (TCP rules only),
	// HostUnreachable, AdminProhibited or NetUnreachable, each the ICMP or
	// ICMPv6 message of the packet's family. Only with action Reject.
	// +optional
	RejectWith RejectWith `json:"rejectWith,omitempty"`

	// limit makes the rule match packets only up to a rate (`-m limit`, or
	// per source address `-m hashlimit --hashlimit-mode srcip`). Packets
	// over the limit go on to the next rule, as in iptables. The rate is
	// counted for each IP family the rule's addresses name, and afresh
	// whenever the node's ruleset is rewritten.
	// +optional
	Limit *RateLimit `json:"limit,omitempty"`

	// connLimit makes the rule match only packets from source addresses
	// with more connections than connLimit.above (`-m connlimit
	// --connlimit-above`). Counts start afresh whenever the node's ruleset
	// is rewritten.
	// +optional
	ConnLimit *ConnLimit `json:"connLimit,omitempty"`

	// Peers from the cluster and named address sets.

	// from are source peers: nodes, their pod CIDRs or a
	// NodeFirewallAddressSet, each less its except CIDRs. The rule matches
	// a source in any of them. Omitted means any source; not with sources.
	// A peer that does not resolve (a missing set, a selector matching no
	// node) matches nothing and is reported on the policy.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:XValidation:rule="self.all(p, (has(p.nodeSelector) ? 1 : 0) + (has(p.podCIDRs) ? 1 : 0) + (has(p.addressSet) ? 1 : 0) == 1)",message="each peer sets exactly one of nodeSelector, podCIDRs and addressSet"
	// +kubebuilder:validation:XValidation:rule="self.all(p, !has(p.addressType) || has(p.nodeSelector))",message="addressType requires nodeSelector"
	// +kubebuilder:validation:XValidation:rule="self.all(p, !has(p.except) || p.except.all(a, isIP(a) || isCIDR(a)))",message="except must be IP addresses or CIDRs"
	From []Peer `json:"from,omitempty"`

	// to are destination peers, as from for the destination address.
	// Omitted means any destination; not with destinations.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:XValidation:rule="self.all(p, (has(p.nodeSelector) ? 1 : 0) + (has(p.podCIDRs) ? 1 : 0) + (has(p.addressSet) ? 1 : 0) == 1)",message="each peer sets exactly one of nodeSelector, podCIDRs and addressSet"
	// +kubebuilder:validation:XValidation:rule="self.all(p, !has(p.addressType) || has(p.nodeSelector))",message="addressType requires nodeSelector"
	// +kubebuilder:validation:XValidation:rule="self.all(p, !has(p.except) || p.except.all(a, isIP(a) || isCIDR(a)))",message="except must be IP addresses or CIDRs"
	To []Peer `json:"to,omitempty"`
}

// RolloutStrategy stages a policy change across its nodes.
type RolloutStrategy struct {
	// maxUnavailable is how many nodes may be taking the new generation at
	// once: nodes that were given it and have not yet reported it applied.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	MaxUnavailable int32 `json:"maxUnavailable"`
}

// MaxPolicyRules bounds the rules of one policy.
const MaxPolicyRules = 512

// DefaultPriority is the priority of a policy that sets none: the
// +kubebuilder:default of spec.priority, for code that reads policies
// without the API server (nodefw render).
const DefaultPriority int32 = 1000

// EffectivePriority is spec.priority, or DefaultPriority when it is unset
// (a policy read without the API server, which would have defaulted it).
func (s *NodeFirewallPolicySpec) EffectivePriority() int32 {
	if s.Priority == nil {
		return DefaultPriority
	}
	return *s.Priority
}

// Condition types of a NodeFirewallPolicy besides Ready, Reconciling and
// Stalled: warnings that do not stop the policy from being Ready, present
// only while true, with the type as their reason.
const (
	// ConditionDefaultActionConflict is True while policies on some node
	// set different default actions for one chain: the more restrictive
	// one, Drop, wins, and both policies carry the condition, naming each
	// other.
	ConditionDefaultActionConflict = "DefaultActionConflict"
	// ConditionFailsafeShadowed is True while a Drop or Reject rule covers a
	// failsafe port that nodes accept before any rule.
	ConditionFailsafeShadowed = "FailsafeShadowed"
	// ConditionUnresolvedPeers is True while a peer of a rule does not
	// resolve: a NodeFirewallAddressSet that does not exist, or a selector
	// that matches no node or nodes without such addresses. The peer
	// matches nothing; the rest of the policy applies.
	ConditionUnresolvedPeers = "UnresolvedPeers"
)

// Condition reasons of a NodeFirewallPolicy only; see also ReasonApplied,
// ReasonProgressing and ReasonApplyFailed.
const (
	// ReasonNoMatchingNodes: the node selector picks no node.
	ReasonNoMatchingNodes = "NoMatchingNodes"
	// ReasonInvalidSelector: the node selector cannot be parsed; the policy
	// selects no node until it is fixed.
	ReasonInvalidSelector = "InvalidSelector"
	// ReasonRolloutHalted: a node failed (or reverted) the generation being
	// rolled out, so no further node is given it until the policy changes.
	ReasonRolloutHalted = "RolloutHalted"
	// ReasonProgressDeadlineExceeded: nodes have not reported a generation
	// within the progress deadline (an agent down, a node unreachable).
	ReasonProgressDeadlineExceeded = "ProgressDeadlineExceeded"
	// ReasonNodeFirewallTooLarge: the NodeFirewall of a node the policy
	// selects would exceed the API server's request size, so it is not
	// written; that node keeps its last NodeFirewall and ruleset.
	ReasonNodeFirewallTooLarge = "NodeFirewallTooLarge"
	// ReasonRevisionTooLarge: the ControllerRevision that would hold the
	// policy's rules exceeds the API server's request size, so it is not
	// written; every node keeps the generation of the policy it has.
	ReasonRevisionTooLarge = "RevisionTooLarge"
	// ReasonAddressSetTooLarge: the managed NodeFirewallAddressSet of a
	// node peer of the policy would exceed the API server's request size,
	// so it is not written; the set, and the agents' rules using it, stay
	// as they were.
	ReasonAddressSetTooLarge = "AddressSetTooLarge"
	// ReasonDefaultActionConflict: this policy's default Drop for a chain
	// overrides another policy's Accept on the nodes both select: the more
	// restrictive default wins, whatever the priorities.
	ReasonDefaultActionConflict = ConditionDefaultActionConflict
	// ReasonDefaultActionOverridden: this policy's default Accept for a
	// chain is overridden by another policy's Drop on the nodes both
	// select. Accept rules, not a default, make exceptions to a Drop.
	ReasonDefaultActionOverridden = "DefaultActionOverridden"
	// ReasonFailsafeShadowed: a Drop or Reject rule covers a failsafe port.
	// The failsafe accept comes first in the kernel, so the rule never drops
	// that traffic.
	ReasonFailsafeShadowed = ConditionFailsafeShadowed
	// ReasonUnresolvedPeers: a peer matches nothing; the message names the
	// rule, the peer and why.
	ReasonUnresolvedPeers = ConditionUnresolvedPeers
)

// NodeFirewallPolicySpec declares firewall rules for the nodes its selector picks.
type NodeFirewallPolicySpec struct {
	// nodeSelector picks the nodes the policy applies to. `{}` selects
	// every node; matchLabels and matchExpressions both work.
	// +required
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn'] ? has(e.values) && size(e.values) > 0 : e.operator in ['Exists', 'DoesNotExist'] && (!has(e.values) || size(e.values) == 0))",message="matchExpressions: operator must be In or NotIn with values, or Exists or DoesNotExist without",fieldPath=".matchExpressions"
	NodeSelector metav1.LabelSelector `json:"nodeSelector"`

	// priority orders policies on a node: lower is evaluated first, and ties
	// are broken by name. Rules of an earlier policy come before those of a
	// later one in each chain. Omitted means 1000.
	// +optional
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	Priority *int32 `json:"priority,omitempty"`

	// mode is Enforce (the default) or Audit. In Audit mode, Drop and Reject
	// rules and a default Drop only count and log the packets they would
	// have dropped; nothing is dropped.
	// +optional
	// +kubebuilder:default=Enforce
	Mode PolicyMode `json:"mode,omitempty"`

	// defaultActions are the chain policies (`iptables -P`). When several
	// policies on a node set a chain differently, the more restrictive
	// default, Drop, wins whatever the priorities, and both policies report
	// the disagreement in status (DefaultActionConflict). When none sets
	// it, Accept. Make exceptions to a Drop with Accept rules, not with a
	// default Accept.
	// +optional
	DefaultActions *DefaultActions `json:"defaultActions,omitempty"`

	// rollout, when set, stages a change: only maxUnavailable nodes at a time
	// take a new generation of the policy, the others keep the previous
	// one, and the rollout halts when a node fails or reverts.
	// +optional
	Rollout *RolloutStrategy `json:"rollout,omitempty"`

	// rules are evaluated in order within each chain; the first match decides.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=512
	Rules []Rule `json:"rules,omitempty"`
}

// NodeFirewallPolicyStatus is the policy's roll-up of its nodes' reports.
type NodeFirewallPolicyStatus struct {
	// observedGeneration is the policy generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// matchedNodes counts the nodes the selector picks.
	// +optional
	MatchedNodes int32 `json:"matchedNodes"`

	// appliedNodes counts the matched nodes whose agent reports this
	// generation of the policy programmed.
	// +optional
	AppliedNodes int32 `json:"appliedNodes"`

	// failedNodes counts the matched nodes whose agent failed to program it.
	// +optional
	FailedNodes int32 `json:"failedNodes"`

	// conditions are Ready, and Reconciling and Stalled while they are true.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NodeFirewallPolicy declares ordered host-firewall rules for a set of nodes.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=nfp
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Matched",type=integer,JSONPath=`.status.matchedNodes`
// +kubebuilder:printcolumn:name="Applied",type=integer,JSONPath=`.status.appliedNodes`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeFirewallPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the policy as the user wrote it. The controller never writes it.
	// +required
	Spec NodeFirewallPolicySpec `json:"spec"`

	// status is written by the controller. Until it first does, the API
	// server serves observedGeneration 0, so that a new policy reads as in
	// progress (kstatus: observedGeneration differs from generation) without
	// a write of its own.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status NodeFirewallPolicyStatus `json:"status,omitempty"`
}

// NodeFirewallPolicyList is a list of NodeFirewallPolicy.
// +kubebuilder:object:root=true
type NodeFirewallPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeFirewallPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NodeFirewallPolicy{}, &NodeFirewallPolicyList{})
}
