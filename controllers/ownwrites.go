package controllers

import (
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// ownWritesTTL is how long a NodeFirewall this controller wrote may stand
// in for the cache's copy: far longer than a watch event takes, and short
// enough that an object deleted by someone else meanwhile is seen again.
const ownWritesTTL = time.Minute

// ownWrites are the NodeFirewalls this controller wrote, as the API server
// returned them, until its cache shows them. The pass that follows a large
// write pass often starts before the watch has brought all of its writes;
// planned from the cache's older copies, it would write them again with a
// resource version that is no longer current, and every such write would
// be refused as a conflict and the pass started over.
type ownWrites struct {
	mu      sync.Mutex
	written map[string]ownWrite
}

type ownWrite struct {
	nfw *fwv1.NodeFirewall
	at  time.Time
}

// record remembers the NodeFirewalls of one pass's creates and updates.
func (o *ownWrites) record(nfws []*fwv1.NodeFirewall, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.written == nil {
		o.written = map[string]ownWrite{}
	}
	for _, nfw := range nfws {
		o.written[nfw.Name] = ownWrite{nfw: nfw, at: now}
	}
}

// forget drops what is known of the named NodeFirewalls (deleted ones).
func (o *ownWrites) forget(names []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, n := range names {
		delete(o.written, n)
	}
}

// overlay is cached with each NodeFirewall this controller wrote in place
// of the cache's copy while the cache has an older generation of it, or
// does not have it yet; the cache's copy once it has caught up.
func (o *ownWrites) overlay(cached []fwv1.NodeFirewall, now time.Time) []fwv1.NodeFirewall {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.written) == 0 {
		return cached
	}
	seen := make(map[string]bool, len(o.written))
	for i := range cached {
		name := cached[i].Name
		w, ok := o.written[name]
		if !ok {
			continue
		}
		seen[name] = true
		if cached[i].Generation >= w.nfw.Generation || now.Sub(w.at) > ownWritesTTL {
			delete(o.written, name)
			continue
		}
		cached[i] = *w.nfw.DeepCopy()
	}
	for name, w := range o.written {
		if seen[name] {
			continue
		}
		if now.Sub(w.at) > ownWritesTTL {
			delete(o.written, name)
			continue
		}
		cached = append(cached, *w.nfw.DeepCopy())
	}
	return cached
}

// ownStatuses are the policy statuses this controller wrote, with the
// resource version each write made, until its cache shows them. A pass
// that starts before the watch brought the last pass's status writes
// would otherwise compare against the older status, write it again, and
// name a resource version that is no longer current: a conflict that
// starts the pass over, and for a policy of hundreds of rules a write
// the API server validates whole.
type ownStatuses struct {
	mu      sync.Mutex
	written map[string]ownStatus
}

type ownStatus struct {
	uid             types.UID
	generation      int64
	resourceVersion string
	status          fwv1.NodeFirewallPolicyStatus
	at              time.Time
}

// record remembers p, as the API server returned it after a status write.
func (o *ownStatuses) record(p *fwv1.NodeFirewallPolicy, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.written == nil {
		o.written = map[string]ownStatus{}
	}
	o.written[p.Name] = ownStatus{uid: p.UID, generation: p.Generation, resourceVersion: p.ResourceVersion,
		status: *p.Status.DeepCopy(), at: now}
}

// forget drops what is known of the named policy: a write of it was
// refused, so the cache's copy is the one to trust.
func (o *ownStatuses) forget(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.written, name)
}

// overlay puts the status and resource version this controller wrote in
// place of the cache's in each cached policy whose cache copy is older
// than that write; it drops what it knows of a policy once the cache has
// caught up, the policy has been replaced or changed its spec, or after
// ownWritesTTL.
func (o *ownStatuses) overlay(cached []fwv1.NodeFirewallPolicy, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.written) == 0 {
		return
	}
	for i := range cached {
		p := &cached[i]
		w, ok := o.written[p.Name]
		if !ok {
			continue
		}
		if p.UID != w.uid || p.Generation != w.generation || !olderVersion(p.ResourceVersion, w.resourceVersion) ||
			now.Sub(w.at) > ownWritesTTL {
			delete(o.written, p.Name)
			continue
		}
		p.ResourceVersion, p.Status = w.resourceVersion, *w.status.DeepCopy()
	}
}

// olderVersion tells whether resource version a came before b. Resource
// versions are opaque; where both are numbers, as the API server's
// are, they are compared as numbers, and otherwise any difference counts
// as older, which a refused write then corrects (see forget).
func olderVersion(a, b string) bool {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	if errA != nil || errB != nil {
		return a != b
	}
	return x < y
}
