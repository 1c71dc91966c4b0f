package diff

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nodefw/nodefw/internal/reference"
	"github.com/nodefw/nodefw/internal/specgen"
)

// TestRandomRuleSets loads random rule sets both ways and compares the
// verdicts of a probe matrix: every source and destination pair of every
// chain, over TCP and UDP, on the ports at, around and between the edges of
// the rule set's port ranges, from the source ports at and around the
// edges of its source port ranges, and ICMP and ICMPv6 messages and
// packets of other IP protocols when its rules match them.
func TestRandomRuleSets(t *testing.T) {
	tp := env(t)
	seed, count := *seedFlag, *countFlag
	first, last := 0, count-1
	if *onlyFlag >= 0 {
		first, last = *onlyFlag, *onlyFlag
	}
	start := time.Now()
	var st stats
	ps := pairs(true)
	for i := first; i <= last; i++ {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		spec := specgen.Random(rng, randomUniverse)
		if err := reference.Validate(spec); err != nil {
			t.Fatalf("set %d: the generator made an invalid rule set: %v", i, err)
		}
		ports := probePorts(rng, spec)
		probes := matrix(ps, ports, ports)
		if sports := probeSourcePorts(rng, spec); len(sports) > 0 {
			probes = append(probes, sourcePortMatrix(ps, sports, ports[:2])...)
		}
		probes = append(probes, messageMatrix(ps, probeMessages(spec))...)
		c := newRuleCase(fmt.Sprintf("set %d (-diff.seed=%d -diff.set=%d)", i, seed, i), spec)
		tp.check(t, c, probes, &st)
	}
	t.Logf("%v, in %v", &st, time.Since(start).Round(time.Millisecond))
}
