package agent

import (
	"k8s.io/apimachinery/pkg/fields"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// CacheOptions make an agent's informer watch only its own node's
// NodeFirewall, filtered by the API server with a field selector, so that no
// agent receives the updates of other nodes: 5,000 agents each watching the
// whole cluster would turn every change into 5,000 deliveries.
func CacheOptions(nodeName string) cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&fwv1.NodeFirewall{}: {Field: fields.OneTermEqualSelector("metadata.name", nodeName)},
		},
	}
}
