package controllers

import (
	"fmt"
	"strings"
	"time"
)

// phaseTimer records how long each phase of a resolve took, for the
// resolve's log line: where the time of a large change goes.
type phaseTimer struct {
	start, last time.Time
	phases      []string
}

func newPhaseTimer() *phaseTimer {
	now := time.Now()
	return &phaseTimer{start: now, last: now}
}

// total is the time since the first phase began.
func (p *phaseTimer) total() time.Duration { return time.Since(p.start) }

// done ends the phase called name.
func (p *phaseTimer) done(name string) {
	now := time.Now()
	p.phases = append(p.phases, fmt.Sprintf("%s=%v", name, now.Sub(p.last).Round(time.Millisecond)))
	p.last = now
}

func (p *phaseTimer) String() string { return strings.Join(p.phases, " ") }
