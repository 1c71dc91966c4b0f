package controllers

import (
	"context"
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/resolve"
	"github.com/nodefw/nodefw/internal/status"
)

// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewalladdresssets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewalladdresssets/status,verbs=get;update;patch

// writeAddressSets creates and updates the managed sets node peers need,
// and their shards, which the agents read (the shard reconciler would
// write them too, a moment later). It runs before NodeFirewalls are
// written, so that an agent finds a rule's set with its addresses already
// there. Those the API server refuses as too large (its limit may be lower
// than the controller's) are returned, for their policies to report; the
// others are written.
func (r *NodeFirewallPolicyReconciler) writeAddressSets(ctx context.Context, w resolve.SetWrites) ([]resolve.SetTooLarge, error) {
	var (
		mu   sync.Mutex
		held []resolve.SetTooLarge
	)
	refused := func(s *fwv1.NodeFirewallAddressSet, err error) error {
		if !isTooLarge(err) {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		held = append(held, resolve.SetTooLarge{Set: s.Name, Bytes: resolve.SetSize(s), Limit: r.requestLimit(), Refused: true})
		return nil
	}
	var writes []func(context.Context) error
	for _, s := range w.Create {
		writes = append(writes, func(ctx context.Context) error {
			err := r.Create(ctx, s, client.FieldOwner(FieldManager))
			switch {
			case apierrors.IsAlreadyExists(err):
				return nil
			case err != nil:
				return refused(s, err)
			}
			return r.writeShards(ctx, s)
		})
	}
	for _, s := range w.Update {
		writes = append(writes, func(ctx context.Context) error {
			err := r.Update(ctx, s, client.FieldOwner(FieldManager))
			switch {
			case apierrors.IsNotFound(err):
				return nil
			case err != nil:
				return refused(s, err)
			}
			return r.writeShards(ctx, s)
		})
	}
	err := r.parallel(ctx, writes)
	return held, err
}

// writeShards writes the shards of s, a managed set just written as
// stored, when there is a shard writer.
func (r *NodeFirewallPolicyReconciler) writeShards(ctx context.Context, s *fwv1.NodeFirewallAddressSet) error {
	if r.Shards == nil {
		return nil
	}
	return r.Shards.Write(ctx, s.Name, s)
}

// deleteAddressSets deletes the managed sets no policy references any
// more, after the NodeFirewalls that named them are written.
func (r *NodeFirewallPolicyReconciler) deleteAddressSets(ctx context.Context, w resolve.SetWrites) error {
	var writes []func(context.Context) error
	for _, s := range w.Delete {
		writes = append(writes, func(ctx context.Context) error {
			return client.IgnoreNotFound(r.Delete(ctx, s, client.Preconditions{UID: &s.UID, ResourceVersion: &s.ResourceVersion}))
		})
	}
	return r.parallel(ctx, writes)
}

// writeAddressSetStatuses writes the count and Ready of every set, the
// user's and the managed ones, where they changed. Sets just written are
// left to the resolve their watch event brings.
func (r *NodeFirewallPolicyReconciler) writeAddressSetStatuses(ctx context.Context, sets []fwv1.NodeFirewallAddressSet, written resolve.SetWrites) error {
	skip := map[string]bool{}
	for _, s := range append(written.Update, written.Delete...) {
		skip[s.Name] = true
	}
	var writes []func(context.Context) error
	for i := range sets {
		s := &sets[i]
		if skip[s.Name] || s.DeletionTimestamp != nil {
			continue
		}
		st := status.AddressSet(s)
		if equality.Semantic.DeepEqual(s.Status, st) {
			continue
		}
		writes = append(writes, func(ctx context.Context) error {
			// A patch of the status alone: an update would carry the
			// set's entries, a megabyte for a large set.
			patch, err := statusPatch(s.ResourceVersion, s.Status, st)
			if err != nil {
				return fmt.Errorf("status patch of address set %s: %w", s.Name, err)
			}
			updated := s.DeepCopy()
			return client.IgnoreNotFound(r.Status().Patch(ctx, updated, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(FieldManager)))
		})
	}
	return r.parallel(ctx, writes)
}
