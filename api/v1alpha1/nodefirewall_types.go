package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AgentFinalizer is owned by the node agent: it removes its nftables table
// before letting its NodeFirewall go. The controller releases it only for a
// node that is gone, after a grace period.
const AgentFinalizer = "firewall.nodefw.io/agent-cleanup"

// Condition reasons of a NodeFirewall only; see also ReasonApplied,
// ReasonProgressing and ReasonApplyFailed.
const (
	// ReasonInvalidSpec: the agent refused a spec that fails its checks
	// (a hand-written NodeFirewall); the previous ruleset stays.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonReverted: the generation cut the node off from its control
	// plane, so the agent restored the previous ruleset.
	ReasonReverted = "Reverted"
)

// NodeFirewallRule is one resolved rule of a node. It carries the fields of
// the policy rule it came from plus the policy's name and mode. The
// controller writes these; the agent checks them again before programming,
// since a hand-written NodeFirewall bypasses the policy's CEL validation.
type NodeFirewallRule struct {
	// policy is the NodeFirewallPolicy the rule came from.
	// +required
	Policy string `json:"policy"`

	// mode is the policy's mode: in Audit mode Drop and Reject only count and log.
	// +optional
	Mode PolicyMode `json:"mode,omitempty"`

	// name is the rule's name within its policy.
	// +required
	Name string `json:"name"`

	// chain is PreRouting, Input, Forward or Output.
	// +required
	Chain Chain `json:"chain"`

	// action is Accept, Drop or Reject.
	// +required
	Action Action `json:"action"`

	// protocol is the IP protocol (`-p`), a name or a number; omitted
	// means any.
	// +optional
	Protocol Protocol `json:"protocol,omitempty"`

	// ports are destination port ranges, inclusive (`--dport`).
	// +optional
	// +listType=atomic
	Ports []PortRange `json:"ports,omitempty"`

	// sources are source addresses or CIDRs (`-s`).
	// +optional
	// +listType=atomic
	Sources []string `json:"sources,omitempty"`

	// destinations are destination addresses or CIDRs (`-d`).
	// +optional
	// +listType=atomic
	Destinations []string `json:"destinations,omitempty"`

	// inInterface is the input interface (`-i`), `+` as a trailing wildcard.
	// +optional
	InInterface string `json:"inInterface,omitempty"`

	// outInterface is the output interface (`-o`), `+` as a trailing wildcard.
	// +optional
	OutInterface string `json:"outInterface,omitempty"`

	// states are conntrack states (`--ctstate`).
	// +optional
	// +listType=atomic
	States []ConnState `json:"states,omitempty"`

	// log logs matches, rate-limited, as JSON lines of the agent.
	// +optional
	Log bool `json:"log,omitempty"`

	// Log settings, only with log: true.

	// logLabel is a short label carried in every log line of the rule.
	// +optional
	LogLabel string `json:"logLabel,omitempty"`

	// logRatePerMinute is how many packets a minute are logged at most; 0 means 10.
	// +optional
	LogRatePerMinute int32 `json:"logRatePerMinute,omitempty"`

	// logBurst is the burst of the log's rate limit; 0 means 5.
	// +optional
	LogBurst int32 `json:"logBurst,omitempty"`

	// Matches and answers of iptables' extensions.

	// sourcePorts are source port ranges, inclusive (`--sport`).
	// +optional
	// +listType=atomic
	SourcePorts []SourcePortRange `json:"sourcePorts,omitempty"`

	// icmpTypes are ICMP or ICMPv6 types, with or without a code
	// (`--icmp-type`, `--icmpv6-type`).
	// +optional
	// +listType=atomic
	ICMPTypes []ICMPType `json:"icmpTypes,omitempty"`

	// rejectWith is the answer of a Reject rule (`--reject-with`).
	// +optional
	RejectWith RejectWith `json:"rejectWith,omitempty"`

	// limit matches packets up to a rate (`-m limit`, `-m hashlimit`).
	// +optional
	Limit *RateLimit `json:"limit,omitempty"`

	// connLimit matches packets of sources with more connections
	// (`-m connlimit --connlimit-above`).
	// +optional
	ConnLimit *ConnLimit `json:"connLimit,omitempty"`

	// Peers from the cluster and named address sets.

	// from are source peers; each names the NodeFirewallAddressSet that
	// holds its addresses (see Peer.SetName), never the addresses.
	// +optional
	// +listType=atomic
	From []Peer `json:"from,omitempty"`

	// to are destination peers, as from.
	// +optional
	// +listType=atomic
	To []Peer `json:"to,omitempty"`
}

// NodeRule is r as the controller writes it on a node: every field of the
// policy's rule, with the name and mode of the policy it came from.
// NodeFirewallRule keeps its own copy of the fields, without the policy's
// validation markers: the agent checks a hand-written NodeFirewall itself,
// and the CEL rules of Rule on spec.rules, a list without maxItems, would
// exceed the API server's cost budget. TestNodeRuleCarriesEveryField fails
// when a field is added to one type and not the other, or not carried over
// here.
func (r Rule) NodeRule(policy string, mode PolicyMode) NodeFirewallRule {
	return NodeFirewallRule{
		Policy:       policy,
		Mode:         mode,
		Name:         r.Name,
		Chain:        r.Chain,
		Action:       r.Action,
		Protocol:     r.Protocol,
		Ports:        r.Ports,
		Sources:      r.Sources,
		Destinations: r.Destinations,
		InInterface:  r.InInterface,
		OutInterface: r.OutInterface,
		States:       r.States,
		Log:          r.Log,
		// Log settings.
		LogLabel:         r.LogLabel,
		LogRatePerMinute: r.LogRatePerMinute,
		LogBurst:         r.LogBurst,
		// Matches and answers of iptables' extensions.
		SourcePorts: r.SourcePorts,
		ICMPTypes:   r.ICMPTypes,
		RejectWith:  r.RejectWith,
		Limit:       r.Limit,
		ConnLimit:   r.ConnLimit,
		// Peers.
		From: r.From,
		To:   r.To,
	}
}

// PolicyReference names a policy at the generation that was resolved.
type PolicyReference struct {
	// name is the NodeFirewallPolicy's name.
	// +required
	Name string `json:"name"`

	// generation is the policy's metadata.generation that was resolved;
	// 0 when the node follows the policy.
	// +optional
	Generation int64 `json:"generation,omitempty"`

	// follow: the node applies the policy's current revision, the
	// ControllerRevision the controller labels firewall.nodefw.io/current
	// (its annotation firewall.nodefw.io/generation gives the policy
	// generation), rather than a generation fixed here, and its agent
	// reports the generation applied in status.policyGenerations. The
	// controller sets it for every policy without a staged rollout: an edit
	// to such a policy's rules then writes one revision and moves the
	// label, and writes no NodeFirewall. generation and revision are empty
	// with it.
	// +optional
	Follow bool `json:"follow,omitempty"`

	// mode is the policy's mode at that generation; empty means Enforce,
	// the default, which the controller leaves out.
	// +optional
	Mode PolicyMode `json:"mode,omitempty"`

	// defaultActions are the policy's default actions at that generation, so
	// that a staged rollout can keep a node on it.
	// +optional
	DefaultActions *DefaultActions `json:"defaultActions,omitempty"`

	// revision names the ControllerRevision, in the controller's namespace,
	// that holds the policy's rules at that generation: the agent reads
	// them from there, in this reference's place in the evaluation order.
	// Empty when the policy's rules are in spec.rules.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Revision string `json:"revision,omitempty"`
}

// NodeFirewallSpec is a node's resolved firewall: what its agent programs.
type NodeFirewallSpec struct {
	// rules are the node's rules in evaluation order: by policy priority,
	// then policy name, then the order within the policy. The controller
	// leaves them out for every policy whose reference names a revision.
	// +optional
	// +listType=atomic
	Rules []NodeFirewallRule `json:"rules,omitempty"`

	// defaultActions are the resolved chain policies; every chain is set.
	// +optional
	DefaultActions DefaultActions `json:"defaultActions,omitempty"`

	// auditedChains are the chains whose Drop default action comes from a
	// policy in Audit mode: the drop is only counted and logged.
	// +optional
	// +listType=set
	AuditedChains []Chain `json:"auditedChains,omitempty"`

	// policies are the policies that select this node, with the generation
	// resolved, in evaluation order.
	// +optional
	// +listType=atomic
	Policies []PolicyReference `json:"policies,omitempty"`
}

// NodeFirewallStatus is written by the node's agent.
type NodeFirewallStatus struct {
	// observedGeneration is the NodeFirewall generation the agent last acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// ruleCount is the number of rules the agent programmed.
	// +optional
	RuleCount int32 `json:"ruleCount,omitempty"`

	// lastAppliedTime is when the ruleset was last committed to the kernel.
	// +optional
	LastAppliedTime *metav1.Time `json:"lastAppliedTime,omitempty"`

	// policyGenerations are, by policy name, the generation of each policy
	// the node follows (spec.policies[].follow) that is in the kernel.
	// +optional
	PolicyGenerations map[string]int64 `json:"policyGenerations,omitempty"`

	// lastError is the error of the last failed apply, empty after a success.
	// +optional
	LastError string `json:"lastError,omitempty"`

	// conditions: Ready is True once observedGeneration is in the kernel.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NodeFirewall is the resolved firewall of one node, named after the node.
// The controller writes its spec; the node's agent writes its status.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=nfw
// +kubebuilder:printcolumn:name="Rules",type=integer,JSONPath=`.status.ruleCount`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Applied",type=date,JSONPath=`.status.lastAppliedTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeFirewall struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the node's resolved firewall, written by the controller.
	// +optional
	Spec NodeFirewallSpec `json:"spec,omitempty"`

	// status is written by the node's agent.
	// +optional
	Status NodeFirewallStatus `json:"status,omitempty"`
}

// NodeFirewallList is a list of NodeFirewall.
// +kubebuilder:object:root=true
type NodeFirewallList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeFirewall `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NodeFirewall{}, &NodeFirewallList{})
}
