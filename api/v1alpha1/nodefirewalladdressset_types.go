package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxAddressSetEntries bounds spec.addresses of one NodeFirewallAddressSet.
// A longer list is several sets referenced together. An object of this
// many IPv6 CIDRs stays under etcd's default request size of 1.5 MiB.
const MaxAddressSetEntries = 60000

// LabelManagedBy marks the NodeFirewallAddressSets the controller keeps
// for node peers; its value is ManagedByController.
const LabelManagedBy = "firewall.nodefw.io/managed-by"

// ManagedByController is the value of LabelManagedBy on sets the
// controller writes and deletes.
const ManagedByController = "nodefw-controller"

// Condition reasons of a NodeFirewallAddressSet.
const (
	// ReasonAddressesValid: every address parses; the set is in use.
	ReasonAddressesValid = "AddressesValid"
	// ReasonInvalidAddresses: an address does not parse (a set written
	// past validation); rules naming the set match nothing from it.
	ReasonInvalidAddresses = "InvalidAddresses"
)

// AddressSetEntry is one address or CIDR of a NodeFirewallAddressSet,
// IPv4 or IPv6.
// +kubebuilder:validation:MinLength=2
// +kubebuilder:validation:MaxLength=43
// +kubebuilder:validation:Pattern=`^[0-9a-fA-F:.]+(/[0-9]{1,3})?$`
// +kubebuilder:validation:XValidation:rule="isIP(self) || isCIDR(self)",message="addresses must be IP addresses or CIDRs, such as 192.0.2.1, 198.51.100.0/24 or 2001:db8::/32"
type AddressSetEntry string

// NodeFirewallAddressSetSpec is a list of addresses rules name as one peer.
type NodeFirewallAddressSetSpec struct {
	// addresses are IPv4 and IPv6 addresses and CIDRs, in any order;
	// duplicates and overlaps are allowed and merged. Up to 60,000 entries;
	// more are several sets referenced together.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=60000
	Addresses []AddressSetEntry `json:"addresses,omitempty"`
}

// NodeFirewallAddressSetStatus is written by the controller.
type NodeFirewallAddressSetStatus struct {
	// observedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// count is the number of entries in spec.addresses.
	// +optional
	Count int32 `json:"count"`

	// conditions: Ready is True once the addresses are checked.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NodeFirewallAddressSet is a named, cluster-wide list of addresses that
// rules reference as a peer (from: [{addressSet: NAME}]). Agents program
// it once per node as nftables sets and update its elements in place.
// The controller also keeps sets for node peers, labelled
// firewall.nodefw.io/managed-by=nodefw-controller; do not edit those.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=nfas
// +kubebuilder:printcolumn:name="Count",type=integer,JSONPath=`.status.count`
// +kubebuilder:printcolumn:name="Managed-By",type=string,JSONPath=`.metadata.labels.firewall\.nodefw\.io/managed-by`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeFirewallAddressSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the set's addresses.
	// +optional
	Spec NodeFirewallAddressSetSpec `json:"spec,omitempty"`

	// status is written by the controller.
	// +optional
	Status NodeFirewallAddressSetStatus `json:"status,omitempty"`
}

// NodeFirewallAddressSetList is a list of NodeFirewallAddressSet.
// +kubebuilder:object:root=true
type NodeFirewallAddressSetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeFirewallAddressSet `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NodeFirewallAddressSet{}, &NodeFirewallAddressSetList{})
}
