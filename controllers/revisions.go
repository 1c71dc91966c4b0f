package controllers

import (
	"context"
	"fmt"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
// reuse and garbage collection need, and no informer watches them.
func (r *NodeFirewallPolicyReconciler) revisionList(ctx context.Context) (map[string]bool, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("ControllerRevisionList"))
	if err := r.APIReader.List(ctx, list, client.InNamespace(r.RevisionNamespace),
		client.MatchingLabels{revision.LabelManagedBy: revision.ManagedBy}); err != nil {
		return nil, fmt.Errorf("listing ControllerRevisions in %s: %w", r.RevisionNamespace, err)
	}
	names := make(map[string]bool, len(list.Items))
	for i := range list.Items {
		names[list.Items[i].Name] = true
	}
	return names, nil
}

// ensureRevisions creates the desired revisions that do not exist yet,
// before any NodeFirewall names them; one that exists is reused, as its
// name is its hash. It returns the names of every revision there is, and
// the size of each the API server refused as too large (its limit may be
// lower than the controller's), which are not written again this pass.
func (r *NodeFirewallPolicyReconciler) ensureRevisions(ctx context.Context, desired []*appsv1.ControllerRevision) (map[string]bool, map[string]int, error) {
	existing, err := r.revisionList(ctx)
	if err != nil {
		return nil, nil, err
	}
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
	err = r.parallel(ctx, writes)
	return existing, refused, err
}

// collectRevisions deletes the revisions that neither the desired state
// nor any NodeFirewall names. The NodeFirewalls are read from the API
// server, not the cache, so that one a lagging cache has not shown yet
// still keeps its revisions; this controller is their only writer, and its
// writes of this pass are done.
func (r *NodeFirewallPolicyReconciler) collectRevisions(ctx context.Context, existing map[string]bool, desired []*appsv1.ControllerRevision) error {
	if !mayBeUnused(existing, desired) {
		return nil
	}
	keep := make(map[string]bool, len(desired))
	for _, cr := range desired {
		keep[cr.Name] = true
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

// mayBeUnused tells whether a revision there is is not desired, so that a
// NodeFirewall may be the last to name it.
func mayBeUnused(existing map[string]bool, desired []*appsv1.ControllerRevision) bool {
	keep := make(map[string]bool, len(desired))
	for _, cr := range desired {
		keep[cr.Name] = true
	}
	for name := range existing {
		if !keep[name] {
			return true
		}
	}
	return false
}
