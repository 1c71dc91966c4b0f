package diff

import (
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"
)

func TestTimingDebug(t *testing.T) {
	tp := env(t)
	rng := rand.New(rand.NewPCG(1, 0))
	spec := randomSpec(rng)
	ports := probePorts(rng, spec)
	c := newRuleCase("x", spec)
	t0 := time.Now()
	if err := tp.load(c); err != nil {
		t.Fatal(err)
	}
	t.Logf("load %v", time.Since(t0))
	probes := matrix(pairs(true), ports, ports)
	var mu sync.Mutex
	var durs []time.Duration
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	t0 = time.Now()
	for _, p := range probes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			s := time.Now()
			tp.ipt.run(p, 200*time.Millisecond)
			mu.Lock()
			durs = append(durs, time.Since(s))
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("%d probes %v", len(probes), time.Since(t0))
	sort.Slice(durs, func(i, j int) bool { return durs[i] < durs[j] })
	t.Logf("p10 %v p50 %v p90 %v p99 %v max %v", durs[len(durs)/10], durs[len(durs)/2], durs[len(durs)*9/10], durs[len(durs)*99/100], durs[len(durs)-1])
}
