package envtesting

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/revision"
	"github.com/nodefw/nodefw/internal/status"
)

// SimulatedAgents stand in for the node agents of many nodes: they report
// every new generation of those nodes' NodeFirewalls applied, and every
// new current revision of the policies they follow, with the number of
// rules of the revisions it names or follows, as an agent does once its
// kernel has them.
type SimulatedAgents struct {
	// Prefix picks the nodes: those whose names start with it.
	Prefix string
	// RevisionNamespace is where the revisions are read.
	RevisionNamespace string
	// Workers is how many NodeFirewalls are acknowledged at once; 0 means 32.
	Workers int

	c     client.Client
	cache cache.Cache
	queue workqueue.TypedDelayingInterface[string]
	// rules are the revisions read so far, by name: they never change,
	// so each is read once, as the agent does.
	rules sync.Map // name -> []fwv1.Rule
}

// Start watches NodeFirewalls (one watch for all the simulated nodes,
// where each agent watches its own) and the metadata of the revisions
// marked current with cfg, writes their status with c, and runs until ctx
// ends. It returns once the watches have synced.
func (a *SimulatedAgents) Start(ctx context.Context, cfg *rest.Config, c client.Client) error {
	var err error
	a.c = c
	a.cache, err = cache.New(cfg, cache.Options{Scheme: Scheme, ByObject: map[client.Object]cache.ByObject{
		revision.Metadata(): {Namespaces: map[string]cache.Config{a.RevisionNamespace: {}}, Label: labels.SelectorFromSet(revision.CurrentSelector())},
	}})
	if err != nil {
		return err
	}
	inf, err := a.cache.GetInformer(ctx, &fwv1.NodeFirewall{})
	if err != nil {
		return err
	}
	a.queue = workqueue.NewTypedDelayingQueue[string]()
	enqueue := func(obj any) {
		if nfw, ok := obj.(*fwv1.NodeFirewall); ok && strings.HasPrefix(nfw.Name, a.Prefix) && nfw.Status.ObservedGeneration != nfw.Generation {
			a.queue.Add(nfw.Name)
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return err
	}
	current, err := a.cache.GetInformer(ctx, revision.Metadata())
	if err != nil {
		return err
	}
	if _, err := current.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { a.enqueueFollowers(ctx, obj) },
		UpdateFunc: func(old, obj any) {
			// Only a new mark concerns the followers, as the agent's
			// watch predicate has it.
			o, ok1 := old.(*metav1.PartialObjectMetadata)
			n, ok2 := obj.(*metav1.PartialObjectMetadata)
			if !ok1 || !ok2 {
				return
			}
			_, was, _ := revision.CurrentOf(o)
			if _, cur, _ := revision.CurrentOf(n); cur != was {
				a.enqueueFollowers(ctx, obj)
			}
		},
	}); err != nil {
		return err
	}
	go func() { _ = a.cache.Start(ctx) }()
	go func() { <-ctx.Done(); a.queue.ShutDown() }()
	if !a.cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("the simulated agents' watch did not sync")
	}
	workers := a.Workers
	if workers <= 0 {
		workers = 32
	}
	for range workers {
		go func() {
			for {
				name, shutdown := a.queue.Get()
				if shutdown {
					return
				}
				if err := a.ack(ctx, name); err != nil && ctx.Err() == nil {
					a.queue.AddAfter(name, 100*time.Millisecond)
				}
				a.queue.Done(name)
			}
		}()
	}
	return nil
}

// enqueueFollowers queues the simulated nodes whose NodeFirewalls follow
// the policy whose revision obj is marked current.
func (a *SimulatedAgents) enqueueFollowers(ctx context.Context, obj any) {
	cr, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return
	}
	policy, _, ok := revision.CurrentOf(cr)
	if !ok {
		return
	}
	var nfws fwv1.NodeFirewallList
	if err := a.cache.List(ctx, &nfws, client.UnsafeDisableDeepCopy); err != nil {
		return
	}
	for i := range nfws.Items {
		nfw := &nfws.Items[i]
		if !strings.HasPrefix(nfw.Name, a.Prefix) {
			continue
		}
		for _, ref := range nfw.Spec.Policies {
			if ref.Follow && ref.Name == policy {
				a.queue.Add(nfw.Name)
				break
			}
		}
	}
}

// ack reports the NodeFirewall named name applied, if its generation, or
// the current revision of a policy it follows, is new.
func (a *SimulatedAgents) ack(ctx context.Context, name string) error {
	nfw := &fwv1.NodeFirewall{}
	if err := a.cache.Get(ctx, client.ObjectKey{Name: name}, nfw); err != nil {
		return client.IgnoreNotFound(err)
	}
	spec, err := PinFollowed(ctx, a.cache, a.RevisionNamespace, nfw.Spec)
	if err != nil {
		return err
	}
	followed := revision.FollowedGenerations(&spec)
	if nfw.Status.ObservedGeneration == nfw.Generation && maps.Equal(nfw.Status.PolicyGenerations, followed) {
		return nil
	}
	rules, err := a.ruleCount(ctx, &spec)
	if err != nil {
		return err
	}
	// A conflict means a newer object, whose event queues it again.
	update := status.NodeStatusUpdate(nfw, status.NodeApplied(nfw, followed, rules, metav1.Now()))
	if err := a.c.Status().Update(ctx, update); err != nil && !apierrors.IsConflict(err) {
		return client.IgnoreNotFound(err)
	}
	return nil
}

// PinFollowed is spec with the policies it follows pinned to the
// revisions marked current in namespace, as reader lists them: what the
// agent compiles (revision.Pin). Tests and simulated agents read it so.
func PinFollowed(ctx context.Context, reader client.Reader, namespace string, spec fwv1.NodeFirewallSpec) (fwv1.NodeFirewallSpec, error) {
	if !revision.Follows(&spec) {
		return spec, nil
	}
	marked := revision.MetadataList()
	// Only read: a cache need not copy the revisions' metadata.
	if err := reader.List(ctx, marked, client.InNamespace(namespace), client.MatchingLabels(revision.CurrentSelector()),
		client.UnsafeDisableDeepCopy); err != nil {
		return fwv1.NodeFirewallSpec{}, err
	}
	return revision.Pin(spec, revision.Currents(marked.Items))
}

// ruleCount is how many rules a pinned spec comes to with the rules of
// the revisions it names, read once each: the count of rules an agent
// expands the spec into, without building them, so that thousands of
// simulated agents cost the machine they share with the API server little.
func (a *SimulatedAgents) ruleCount(ctx context.Context, spec *fwv1.NodeFirewallSpec) (int, error) {
	n := len(spec.Rules)
	for _, ref := range spec.Policies {
		if ref.Revision == "" {
			continue
		}
		rs, err := a.revisionRules(ctx, ref.Revision)
		if err != nil {
			return 0, err
		}
		n += len(rs)
	}
	return n, nil
}

// revisionRules are the rules of the revision called name, read once.
func (a *SimulatedAgents) revisionRules(ctx context.Context, name string) ([]fwv1.Rule, error) {
	if rs, ok := a.rules.Load(name); ok {
		return rs.([]fwv1.Rule), nil
	}
	cr := &appsv1.ControllerRevision{}
	if err := a.c.Get(ctx, client.ObjectKey{Namespace: a.RevisionNamespace, Name: name}, cr); err != nil {
		return nil, err
	}
	rs, err := revision.Rules(cr)
	if err != nil {
		return nil, err
	}
	a.rules.Store(name, rs)
	return rs, nil
}
