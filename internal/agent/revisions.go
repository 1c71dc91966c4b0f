package agent

import (
	"context"
	"fmt"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/revision"
)

// ReasonRevisionUnavailable: a ControllerRevision the NodeFirewall names
// could not be read; the previous ruleset stays.
const ReasonRevisionUnavailable = "RevisionUnavailable"

// Revisions fetches the ControllerRevisions a NodeFirewall names, each by
// name with a get and no informer, and keeps their rules for as long as the
// NodeFirewall names them: a revision never changes, so it is read once.
type Revisions struct {
	// Reader reads from the API server; the agent's RBAC allows get on
	// controllerrevisions in Namespace only.
	Reader    client.Reader
	Namespace string

	mu    sync.Mutex
	rules map[string][]fwv1.Rule
}

// Expand is spec with the rules of the revisions it names in place (see
// revision.Expand), fetching those not read before. Revisions spec no
// longer names are forgotten.
func (v *Revisions) Expand(ctx context.Context, spec fwv1.NodeFirewallSpec) (fwv1.NodeFirewallSpec, error) {
	names := revision.Names(&spec)
	if len(names) == 0 {
		return spec, nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.Reader == nil {
		return fwv1.NodeFirewallSpec{}, fmt.Errorf("the NodeFirewall names ControllerRevisions, and the agent has no namespace to read them from")
	}
	kept := make(map[string][]fwv1.Rule, len(names))
	for _, name := range names {
		if rules, ok := v.rules[name]; ok {
			kept[name] = rules
			continue
		}
		cr := &appsv1.ControllerRevision{}
		if err := v.Reader.Get(ctx, client.ObjectKey{Namespace: v.Namespace, Name: name}, cr); err != nil {
			return fwv1.NodeFirewallSpec{}, fmt.Errorf("reading ControllerRevision %s/%s: %w", v.Namespace, name, err)
		}
		rules, err := revision.Rules(cr)
		if err != nil {
			return fwv1.NodeFirewallSpec{}, err
		}
		kept[name] = rules
	}
	v.rules = kept
	return revision.Expand(spec, kept)
}
