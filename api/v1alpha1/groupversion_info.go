// Package v1alpha1 contains the nodefw API: NodeFirewallPolicy, which users
// write, and NodeFirewall, the per-node resolved form the node agent programs.
// +kubebuilder:object:generate=true
// +groupName=firewall.nodefw.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the nodefw API.
	GroupVersion = schema.GroupVersion{Group: "firewall.nodefw.io", Version: "v1alpha1"}

	// SchemeBuilder registers the nodefw types with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the nodefw types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
