package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeAddressType is the kind of Node.status.addresses entry a nodeSelector
// peer takes.
// +kubebuilder:validation:Enum=InternalIP;ExternalIP
type NodeAddressType string

const (
	NodeAddressInternalIP NodeAddressType = "InternalIP"
	NodeAddressExternalIP NodeAddressType = "ExternalIP"
)

// MaxPeers bounds the peers of one rule's from or to.
const MaxPeers = 8

// MaxPeerExcepts bounds the except CIDRs of one peer.
const MaxPeerExcepts = 16

// Peer is one entry of a rule's from or to: the addresses of a set of
// nodes, the pod CIDRs of a set of nodes, or a NodeFirewallAddressSet,
// less the except CIDRs. Exactly one of nodeSelector, podCIDRs and
// addressSet is set. The addresses are kept in NodeFirewallAddressSets,
// shared by every node that needs them, and updated in the kernel element
// by element as nodes join, leave or change address.
//
// Its CEL rules are on the rule's from and to, not here: NodeFirewall
// rules share this type in lists without maxItems, where they would exceed
// the API server's cost budget.
type Peer struct {
	// nodeSelector selects nodes by label; the peer is their addresses from
	// Node.status.addresses, IPv4 and IPv6, of type addressType. `{}`
	// selects every node.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// addressType is the type of the node addresses a nodeSelector peer
	// takes: InternalIP (the default) or ExternalIP. Only with nodeSelector.
	// +optional
	AddressType NodeAddressType `json:"addressType,omitempty"`

	// podCIDRs selects nodes by label; the peer is their pod CIDRs
	// (Node.spec.podCIDRs). `{}` selects every node: the whole cluster's
	// pod CIDRs.
	// +optional
	PodCIDRs *metav1.LabelSelector `json:"podCIDRs,omitempty"`

	// addressSet is the name of a NodeFirewallAddressSet; the peer is its
	// addresses.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	AddressSet string `json:"addressSet,omitempty"`

	// except are addresses or CIDRs carved out of the peer, IPv4 or IPv6,
	// as Calico's notNets and Cilium's except: an address in them does not
	// match this peer (it may still match another peer of the list).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=43
	Except []string `json:"except,omitempty"`
}
