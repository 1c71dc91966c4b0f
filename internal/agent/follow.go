package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/revision"
)

// CurrentRevisionsCache is the agent's cache of the metadata of the
// revisions marked current in namespace (revision.LabelCurrent): one per
// policy, whose annotations name the policy and the generation. The agent
// watches nothing else of the policies: a mark moves only when a followed
// policy's rules or generation change, and the agent needs no right on the
// policies themselves. Its own cache, as the manager's watches the
// address sets' shards, another selection of the same kind. Add it to the
// manager, which starts it.
func CurrentRevisionsCache(cfg *rest.Config, scheme *runtime.Scheme, namespace string) (cache.Cache, error) {
	return cache.New(cfg, cache.Options{
		Scheme:               scheme,
		DefaultNamespaces:    map[string]cache.Config{namespace: {}},
		DefaultLabelSelector: labels.SelectorFromSet(revision.CurrentSelector()),
		DefaultTransform:     cache.TransformStripManagedFields(),
	})
}

// pin is the NodeFirewall's spec with each policy it follows pinned to the
// revision marked current (revision.Pin): read from CurrentRevisions, or
// from the API server when it does not show one for a followed policy yet
// (the controller marks the revision before it writes a NodeFirewall that
// follows the policy). A followed policy with none keeps the revision last
// pinned: a policy just deleted, until the controller writes the
// NodeFirewall without it. It also keeps the generations pinned in r.cur,
// for the status and for telling rulesets apart.
func (r *Reconciler) pin(ctx context.Context, nfw *fwv1.NodeFirewall) (fwv1.NodeFirewallSpec, error) {
	r.cur.followed = nil
	if !revision.Follows(&nfw.Spec) {
		return nfw.Spec, nil
	}
	current, err := r.currentRevisions(ctx, r.CurrentRevisions)
	if err != nil {
		return fwv1.NodeFirewallSpec{}, err
	}
	if missing(current, &nfw.Spec) && r.Revisions != nil && r.Revisions.Reader != nil {
		if current, err = r.currentRevisions(ctx, r.Revisions.Reader); err != nil {
			return fwv1.NodeFirewallSpec{}, err
		}
	}
	for _, name := range revision.Followed(&nfw.Spec) {
		if _, ok := current[name]; !ok {
			if last, ok := r.lastPinned[name]; ok {
				current[name] = last
			}
		}
	}
	pinned, err := revision.Pin(nfw.Spec, current)
	if err != nil {
		return fwv1.NodeFirewallSpec{}, err
	}
	r.lastPinned = current
	r.cur.followed = revision.FollowedGenerations(&pinned)
	return pinned, nil
}

// currentRevisions are the revisions marked current, by policy, as
// reader lists them; none without a reader or a namespace.
func (r *Reconciler) currentRevisions(ctx context.Context, reader client.Reader) (map[string]revision.Current, error) {
	if reader == nil || r.Revisions == nil || r.Revisions.Namespace == "" {
		return map[string]revision.Current{}, nil
	}
	marked := revision.MetadataList()
	if err := reader.List(ctx, marked, client.InNamespace(r.Revisions.Namespace), client.MatchingLabels(revision.CurrentSelector())); err != nil {
		return nil, fmt.Errorf("listing the current revisions in %s: %w", r.Revisions.Namespace, err)
	}
	return revision.Currents(marked.Items), nil
}

// missing tells whether a policy spec follows has no current revision.
func missing(current map[string]revision.Current, spec *fwv1.NodeFirewallSpec) bool {
	for _, name := range revision.Followed(spec) {
		if _, ok := current[name]; !ok {
			return true
		}
	}
	return false
}

// generationsKey identifies the followed policies' generations in
// generations, which is compared with ==.
func generationsKey(followed map[string]int64) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(followed)) {
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(strconv.FormatInt(followed[name], 10))
		b.WriteByte(',')
	}
	return b.String()
}

// currentRevisionSource reconciles the node when a revision is marked
// current, or its mark moves, for a policy its NodeFirewall, as cached,
// follows. A mark taken away needs no reconcile: the next one is set
// first.
func (r *Reconciler) currentRevisionSource() source.TypedSource[reconcile.Request] {
	toNode := handler.TypedEnqueueRequestsFromMapFunc(func(ctx context.Context, cr *metav1.PartialObjectMetadata) []reconcile.Request {
		policy, _, ok := revision.CurrentOf(cr)
		if !ok {
			return nil
		}
		nfw := &fwv1.NodeFirewall{}
		if err := r.Client.Get(ctx, client.ObjectKey{Name: r.NodeName}, nfw); err != nil {
			return nil
		}
		for _, ref := range nfw.Spec.Policies {
			if ref.Follow && ref.Name == policy {
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: r.NodeName}}}
			}
		}
		return nil
	})
	marked := predicate.TypedFuncs[*metav1.PartialObjectMetadata]{
		CreateFunc: func(event.TypedCreateEvent[*metav1.PartialObjectMetadata]) bool { return true },
		UpdateFunc: func(e event.TypedUpdateEvent[*metav1.PartialObjectMetadata]) bool {
			_, was, _ := revision.CurrentOf(e.ObjectOld)
			_, is, ok := revision.CurrentOf(e.ObjectNew)
			return ok && is != was
		},
		DeleteFunc:  func(event.TypedDeleteEvent[*metav1.PartialObjectMetadata]) bool { return false },
		GenericFunc: func(event.TypedGenericEvent[*metav1.PartialObjectMetadata]) bool { return false },
	}
	return source.Kind(r.CurrentRevisions, revision.Metadata(), toNode, marked)
}
