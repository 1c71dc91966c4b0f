package controllers

import (
	"sync"
	"time"

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
