package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Prefixes of the names of the NodeFirewallAddressSets the controller
// keeps for node peers.
const (
	ManagedNodesSetPrefix    = "nodefw-nodes-"
	ManagedPodCIDRsSetPrefix = "nodefw-podcidrs-"
)

// EffectiveAddressType is addressType, or InternalIP when it is unset.
func (p Peer) EffectiveAddressType() NodeAddressType {
	if p.AddressType == "" {
		return NodeAddressInternalIP
	}
	return p.AddressType
}

// IsNodePeer reports whether the controller resolves the peer from Nodes
// into a set of its own (nodeSelector or podCIDRs).
func (p Peer) IsNodePeer() bool {
	return p.NodeSelector != nil || p.PodCIDRs != nil
}

// SetName is the name of the NodeFirewallAddressSet holding the peer's
// addresses: addressSet itself, or for a node peer a name the controller
// and the agents derive alike from a hash of the peer's selector (in its
// canonical form, so that equal selectors share one set) and address
// type. except is not part of it: peers that differ only in except share
// the set. It fails for a selector that does not parse.
func (p Peer) SetName() (string, error) {
	switch {
	case p.AddressSet != "":
		return p.AddressSet, nil
	case p.NodeSelector != nil:
		return managedSetName(ManagedNodesSetPrefix, p.NodeSelector, string(p.EffectiveAddressType()))
	case p.PodCIDRs != nil:
		return managedSetName(ManagedPodCIDRsSetPrefix, p.PodCIDRs, "")
	}
	return "", fmt.Errorf("peer names no nodeSelector, podCIDRs or addressSet")
}

// managedSetName is prefix plus 16 hex digits of the hash of the canonical
// selector and the address type.
func managedSetName(prefix string, sel *metav1.LabelSelector, addressType string) (string, error) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return "", fmt.Errorf("selector: %w", err)
	}
	sum := sha256.Sum256([]byte(prefix + "\x00" + addressType + "\x00" + s.String()))
	return prefix + hex.EncodeToString(sum[:8]), nil
}
