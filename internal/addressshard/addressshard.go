// Package addressshard stores the contents of each NodeFirewallAddressSet
// for the agents as shards: immutable apps/v1 ControllerRevisions in the
// controller's namespace, each holding the entries of one set that a hash
// assigns to it. A set of up to PerShard entries is one shard; a larger
// one is K shards, K a power of two, about PerShard entries each. An
// entry's shard depends on the entry alone, so a one-entry change rewrites
// one shard of some 20 KB, not the whole set: the agents, which watch the
// shards instead of the sets, receive that one shard and not a megabyte
// each.
//
// The controller creates a set's new shards before it deletes those they
// replace, so that an agent always finds a complete group of shards; Select
// tells an agent which shards make up the set at any moment. Everything
// here is pure.
package addressshard

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/revision"
)

const (
	// LabelSet marks a shard and says which set it belongs to: a hash of
	// the set's name, as a name may be longer than a label value can be.
	// AnnotationSet holds the name itself.
	LabelSet = "firewall.nodefw.io/address-set"
	// AnnotationSet is the full name of the shard's set.
	AnnotationSet = "firewall.nodefw.io/address-set"
	// AnnotationUID is the UID of the set the shard was written from: a set
	// deleted and created again gets new shards.
	AnnotationUID = "firewall.nodefw.io/address-set-uid"
	// AnnotationGeneration is the set's generation the shard was written
	// from (also its ControllerRevision.Revision), in metadata so that a
	// list of metadata alone tells it.
	AnnotationGeneration = "firewall.nodefw.io/address-set-generation"
	// LabelShards is K, the number of shards of the group the shard is
	// one of.
	LabelShards = "firewall.nodefw.io/shards"
	// LabelShard is the shard's index in its group, 0 to K-1.
	LabelShard = "firewall.nodefw.io/shard"

	// PerShard is about how many entries a shard holds: a few tens of
	// kilobytes, what one changed entry costs every agent.
	PerShard = 1000
)

// Data is what a shard holds: its entries, in the order of the set's spec.
type Data struct {
	Addresses []fwv1.AddressSetEntry `json:"addresses,omitempty"`
}

// Ref is what a shard's metadata says of it.
type Ref struct {
	// Name is the shard's name, a hash of its contents.
	Name string
	// Set and UID are the set's name and UID.
	Set string
	UID types.UID
	// Generation is the set's generation the shard was written from.
	Generation int64
	// K is the number of shards of its group, Index its place in it.
	K, Index int
}

// SetHash is LabelSet's value for the set called name.
func SetHash(name string) string {
	h := sha256.Sum256([]byte(name))
	return hex.EncodeToString(h[:])[:16]
}

// Selector selects every shard, of every set: what an agent watches.
func Selector() labels.Selector {
	req, err := labels.NewRequirement(LabelSet, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant, valid key
	}
	return labels.NewSelector().Add(*req)
}

// Count is how many shards a set of n entries has: 1 up to PerShard
// entries, else the power of two that leaves at most PerShard in each.
// A set that has current shards keeps that number while each holds
// between a quarter of PerShard and twice it, so that a set whose size
// hovers around a boundary is not rewritten whole at every change.
func Count(n, current int) int {
	if current >= 1 && current&(current-1) == 0 && n <= 2*current*PerShard && (current == 1 || 4*n > current*PerShard) {
		return current
	}
	k := 1
	for k*PerShard < n {
		k *= 2
	}
	return k
}

// Index is the shard of k (a power of two) that entry e belongs to: a
// hash of its canonical form, so that 192.0.2.1 and 192.0.2.1/32 share
// one.
func Index(e fwv1.AddressSetEntry, k int) int {
	h := fnv.New64a()
	h.Write([]byte(canonical(e)))
	// FNV's low bits alone spread similar strings poorly: mix them in
	// (the finalizer of SplitMix64).
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return int(x & uint64(k-1))
}

// canonical is an entry as a masked prefix, or as it is written when it
// does not parse (it then travels as it is, for the agent to refuse).
func canonical(e fwv1.AddressSetEntry) string {
	if p, err := netip.ParsePrefix(string(e)); err == nil {
		return p.Masked().String()
	}
	if a, err := netip.ParseAddr(string(e)); err == nil {
		return netip.PrefixFrom(a, a.BitLen()).String()
	}
	return string(e)
}

// For are the shards holding s's entries in namespace, in index order,
// of Count(len(entries), current) shards: current is the number of
// shards the set has now (0 for none). Each shard is named after the set
// and a hash of its set's name and UID, its place and its entries, so
// that an unchanged part of the set keeps its shard; each is owned by s,
// for the garbage collector to delete it with the set.
func For(s *fwv1.NodeFirewallAddressSet, namespace string, current int) []*appsv1.ControllerRevision {
	k := Count(len(s.Spec.Addresses), current)
	parts := make([][]fwv1.AddressSetEntry, k)
	for _, e := range s.Spec.Addresses {
		i := Index(e, k)
		parts[i] = append(parts[i], e)
	}
	owner := metav1.OwnerReference{APIVersion: fwv1.GroupVersion.String(), Kind: "NodeFirewallAddressSet", Name: s.Name, UID: s.UID}
	out := make([]*appsv1.ControllerRevision, k)
	for i, part := range parts {
		raw, err := json.Marshal(Data{Addresses: part})
		if err != nil {
			// Entries are strings.
			panic(fmt.Sprintf("encoding a shard of address set %s: %v", s.Name, err))
		}
		h := sha256.New()
		fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d\x00", s.Name, s.UID, k, i)
		h.Write(raw)
		hash := hex.EncodeToString(h.Sum(nil))[:10]
		out[i] = &appsv1.ControllerRevision{
			ObjectMeta: metav1.ObjectMeta{
				Name:      revision.Name(s.Name, hash),
				Namespace: namespace,
				Labels: map[string]string{
					LabelSet:    SetHash(s.Name),
					LabelShards: strconv.Itoa(k),
					LabelShard:  strconv.Itoa(i),
				},
				Annotations: map[string]string{
					AnnotationSet:        s.Name,
					AnnotationUID:        string(s.UID),
					AnnotationGeneration: strconv.FormatInt(s.Generation, 10),
				},
				OwnerReferences: []metav1.OwnerReference{owner},
			},
			Data:     runtime.RawExtension{Raw: raw},
			Revision: s.Generation,
		}
	}
	return out
}

// RefOf reads a shard's metadata; ok is false for an object that is not
// a well-formed shard.
func RefOf(obj metav1.Object) (Ref, bool) {
	l, a := obj.GetLabels(), obj.GetAnnotations()
	set, found := a[AnnotationSet]
	if !found || l[LabelSet] != SetHash(set) {
		return Ref{}, false
	}
	k, err1 := strconv.Atoi(l[LabelShards])
	i, err2 := strconv.Atoi(l[LabelShard])
	gen, err3 := strconv.ParseInt(a[AnnotationGeneration], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || k < 1 || i < 0 || i >= k {
		return Ref{}, false
	}
	return Ref{Name: obj.GetName(), Set: set, UID: types.UID(a[AnnotationUID]), Generation: gen, K: k, Index: i}, true
}

// Entries decodes the entries a shard holds.
func Entries(cr *appsv1.ControllerRevision) ([]fwv1.AddressSetEntry, error) {
	var d Data
	if err := json.Unmarshal(cr.Data.Raw, &d); err != nil {
		return nil, fmt.Errorf("decoding address set shard %s: %w", cr.Name, err)
	}
	return d.Addresses, nil
}

// Select picks, from the shards there are of one set, those that make it
// up, in index order, or nil when there is no complete group (the set is
// missing). Shards are grouped by K; a group is complete when it has
// every index from 0 to K-1. Of two shards of one index (the new one
// created, the one it replaces not yet deleted), the one written from the
// newer set generation counts; of complete groups, the one written from
// the newest. Ties go to the smaller name, so that every reader picks
// alike.
func Select(refs []Ref) []Ref {
	groups := map[int][]*Ref{}
	for i := range refs {
		r := &refs[i]
		g := groups[r.K]
		if g == nil {
			g = make([]*Ref, r.K)
			groups[r.K] = g
		}
		if cur := g[r.Index]; cur == nil || newer(*r, *cur) {
			g[r.Index] = r
		}
	}
	var (
		best    []*Ref
		bestGen int64
	)
	ks := make([]int, 0, len(groups))
	for k := range groups {
		ks = append(ks, k)
	}
	slices.Sort(ks) // a tie between complete groups goes to the smaller K
	for _, k := range ks {
		g := groups[k]
		if slices.Contains(g, nil) {
			continue
		}
		var gen int64
		for _, r := range g {
			gen = max(gen, r.Generation)
		}
		if best == nil || gen > bestGen {
			best, bestGen = g, gen
		}
	}
	if best == nil {
		return nil
	}
	out := make([]Ref, len(best))
	for i, r := range best {
		out[i] = *r
	}
	return out
}

// newer tells whether a is preferred to b for the same index.
func newer(a, b Ref) bool {
	if a.Generation != b.Generation {
		return a.Generation > b.Generation
	}
	return a.Name < b.Name
}
