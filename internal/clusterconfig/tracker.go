package clusterconfig

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// State is the settings in force and where they come from.
type State struct {
	Settings Settings
	// Generation is the NodeFirewallConfig generation Settings come from;
	// 0 means the bootstrap settings (the flags): there is no object, or
	// none of its generations seen so far passed the checks.
	Generation int64
	// Err is why the object's current generation was refused, nil when
	// it is the one in force or there is no object. Settings are then the
	// last good ones.
	Err error
}

// Tracker keeps the settings in force as the NodeFirewallConfig changes:
// a generation that passes For's checks takes over; one that fails them
// leaves the last good one in force (fail-static), or the bootstrap
// settings when there was none; without the object the bootstrap settings
// apply. It is safe for concurrent use.
type Tracker struct {
	mu        sync.Mutex
	bootstrap Settings
	good      *State
	// goodUID is the object good came from: one deleted and created again
	// starts its generations over.
	goodUID types.UID
}

// NewTracker returns a Tracker whose bootstrap settings, in force until a
// good generation is seen and whenever the object is absent, are the
// process's flags.
func NewTracker(bootstrap Settings) *Tracker {
	return &Tracker{bootstrap: bootstrap}
}

// Observe takes the object as it is now, nil when it does not exist, and
// returns the settings in force.
func (t *Tracker) Observe(cfg *fwv1.NodeFirewallConfig) State {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cfg == nil {
		t.good = nil
		return State{Settings: t.bootstrap}
	}
	if t.good != nil && t.goodUID == cfg.UID && t.good.Generation == cfg.Generation {
		return *t.good
	}
	s, err := For(&cfg.Spec)
	if err != nil {
		st := State{Settings: t.bootstrap, Err: err}
		if t.good != nil {
			st.Settings, st.Generation = t.good.Settings, t.good.Generation
		}
		return st
	}
	t.good, t.goodUID = &State{Settings: s, Generation: cfg.Generation}, cfg.UID
	return *t.good
}
