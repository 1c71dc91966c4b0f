package controllers

import (
	"context"
	"fmt"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/resolve"
	"github.com/nodefw/nodefw/internal/revision"
)

// The controller's rights on revisions are namespaced: a Role in its own
// namespace (config/rbac/revisions_role.yaml), not markers, which would
// grant them in every namespace.

// revisionList lists the revisions the controller owns, metadata only and
// straight from the API server: their names carry their hash, which is all
// reuse and garbage collection need, their labels and annotations which
// is current, and no informer watches them.
func (r *NodeFirewallPolicyReconciler) revisionList(ctx context.Context) ([]metav1.PartialObjectMetadata, error) {
	list := revision.MetadataList()
	if err := r.APIReader.List(ctx, list, client.InNamespace(r.RevisionNamespace),
		client.MatchingLabels{revision.LabelManagedBy: revision.ManagedBy}); err != nil {
		return nil, fmt.Errorf("listing ControllerRevisions in %s: %w", r.RevisionNamespace, err)
	}
	return list.Items, nil
}

// revisionNames are the names of listed revisions.
func revisionNames(listed []metav1.PartialObjectMetadata) map[string]bool {
	names := make(map[string]bool, len(listed))
	for i := range listed {
		names[listed[i].Name] = true
	}
	return names
}

// ensureRevisions creates the desired revisions that do not exist yet,
// before any NodeFirewall names them; one that exists is reused, as its
// name is its hash. It adds those it created to existing, and returns the
// size of each the API server refused as too large (its limit may be
// lower than the controller's), which are not written again this pass.
func (r *NodeFirewallPolicyReconciler) ensureRevisions(ctx context.Context, existing map[string]bool, desired []*appsv1.ControllerRevision) (map[string]int, error) {
	var (
		mu      sync.Mutex
		refused = map[string]int{}
		writes  []func(context.Context) error
	)
	for _, cr := range desired {
		if existing[cr.Name] {
			continue
		}
		writes = append(writes, func(ctx context.Context) error {
			err := r.Create(ctx, cr.DeepCopy(), client.FieldOwner(FieldManager))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil || apierrors.IsAlreadyExists(err):
				existing[cr.Name] = true
				return nil
			case isTooLarge(err):
				refused[cr.Name] = resolve.RevisionSize(cr)
				return nil
			}
			return fmt.Errorf("creating ControllerRevision %s of policy %s: %w", cr.Name, revision.Policy(cr), err)
		})
	}
	err := r.parallel(ctx, writes)
	return refused, err
}

// collectRevisions deletes the revisions that are neither in use (see
// inUse) nor named by any NodeFirewall. The NodeFirewalls are read from
// the API server, not the cache, so that one a lagging cache has not shown
// yet still keeps its revisions; this controller is their only writer, and
// its writes of this pass are done.
func (r *NodeFirewallPolicyReconciler) collectRevisions(ctx context.Context, existing, inUse map[string]bool) error {
	if !mayBeUnused(existing, inUse) {
		return nil
	}
	keep := make(map[string]bool, len(inUse))
	for name := range inUse {
		keep[name] = true
	}
	var nfws fwv1.NodeFirewallList
	if err := r.APIReader.List(ctx, &nfws); err != nil {
		return fmt.Errorf("listing NodeFirewalls for revision garbage collection: %w", err)
	}
	for i := range nfws.Items {
		for _, name := range revision.Names(&nfws.Items[i].Spec) {
			keep[name] = true
		}
	}
	var deletes []func(context.Context) error
	for name := range existing {
		if keep[name] {
			continue
		}
		deletes = append(deletes, func(ctx context.Context) error {
			cr := &appsv1.ControllerRevision{}
			cr.Name, cr.Namespace = name, r.RevisionNamespace
			log.FromContext(ctx).V(1).Info("deleting unreferenced revision", "revision", name)
			return client.IgnoreNotFound(r.Delete(ctx, cr))
		})
	}
	return r.parallel(ctx, deletes)
}

// inUse are the names of the revisions the desired state uses: every
// policy's latest, and the current revision of each followed policy,
// which its nodes apply.
func inUse(desired resolve.Result) map[string]bool {
	out := make(map[string]bool, len(desired.Revisions)+len(desired.Current))
	for _, cr := range desired.Revisions {
		out[cr.Name] = true
	}
	for _, cur := range desired.Current {
		out[cur.Revision] = true
	}
	return out
}

// mayBeUnused tells whether a revision there is is not in use, so that a
// NodeFirewall may be the last to name it.
func mayBeUnused(existing, inUse map[string]bool) bool {
	for name := range existing {
		if !inUse[name] {
			return true
		}
	}
	return false
}

// markCurrent marks the current revision of each followed policy
// (revision.MarkCurrent), once it is written and before a NodeFirewall
// follows the policy, and then takes the mark from the revisions of those
// policies it marked before: the nodes following a policy apply the
// revision marked, of two the one of the newer generation. A patch of a
// revision's metadata or two per change, in place of a write of every
// NodeFirewall that names the policy. listed is the revisions' metadata
// as listed at the start of the pass.
func (r *NodeFirewallPolicyReconciler) markCurrent(ctx context.Context, listed []metav1.PartialObjectMetadata, current map[string]revision.Current) error {
	marked := map[string]revision.Current{}
	for i := range listed {
		if _, cur, ok := revision.CurrentOf(&listed[i]); ok {
			marked[cur.Revision] = cur
		}
	}
	patch := func(name string, body []byte) func(context.Context) error {
		return func(ctx context.Context) error {
			cr := revision.Metadata()
			cr.Name, cr.Namespace = name, r.RevisionNamespace
			if err := r.Patch(ctx, cr, client.RawPatch(types.MergePatchType, body), client.FieldOwner(FieldManager)); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("marking ControllerRevision %s: %w", name, err)
			}
			return nil
		}
	}
	var marks, unmarks []func(context.Context) error
	for _, want := range current {
		if marked[want.Revision] != want {
			marks = append(marks, patch(want.Revision, revision.MarkCurrent(want.Generation)))
		}
	}
	for i := range listed {
		policy, cur, ok := revision.CurrentOf(&listed[i])
		if want, followed := current[policy]; ok && followed && want.Revision != cur.Revision {
			unmarks = append(unmarks, patch(cur.Revision, revision.UnmarkCurrent()))
		}
	}
	if err := r.parallel(ctx, marks); err != nil {
		return err
	}
	return r.parallel(ctx, unmarks)
}
