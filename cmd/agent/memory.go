package main

import (
	"context"
	"os"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"
)

// memoryLimitFloor is the least soft memory limit the agent sets, and
// memoryHeadroom the least room it leaves above the live heap. The agent's
// resident size is about 30 MiB of binary and start-up before any rule; at
// 10,000 rules its live heap is some 15-20 MiB, and each sync allocates
// several times that for a moment (the rules expanded, compiled, sent and
// the kernel's sets read back). At GOGC's pace alone those bursts took the
// process to 60-65 MiB; a limit a little above the live heap makes the
// collector run sooner and the scavenger hand freed pages back.
const (
	memoryLimitFloor = 28 << 20
	memoryHeadroom   = 12 << 20
)

// memoryLimitFor is the soft memory limit for a live heap of live bytes:
// the live heap plus half as much again, or plus memoryHeadroom when that
// is more, so that each collection frees enough for the next not to follow
// at once (a limit at the live heap would run the collector back to back);
// and at least memoryLimitFloor.
func memoryLimitFor(live uint64) int64 {
	l := int64(min(live, 1<<60))
	return max(memoryLimitFloor, l+max(memoryHeadroom, l/2))
}

// followLiveHeap keeps the Go runtime's soft memory limit at
// memoryLimitFor the live heap the last collection measured, read every
// period, until ctx ends. A GOMEMLIMIT in the environment is the
// operator's choice and wins: then it does nothing.
func followLiveHeap(ctx context.Context, period time.Duration) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	sample := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		rtmetrics.Read(sample)
		if sample[0].Value.Kind() == rtmetrics.KindUint64 {
			debug.SetMemoryLimit(memoryLimitFor(sample[0].Value.Uint64()))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
