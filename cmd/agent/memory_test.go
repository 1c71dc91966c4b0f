package main

import "testing"

func TestMemoryLimitFor(t *testing.T) {
	for _, c := range []struct {
		live uint64
		want int64
	}{
		{0, memoryLimitFloor},
		{10 << 20, memoryLimitFloor},
		{16 << 20, 28 << 20},
		{20 << 20, 32 << 20},
		{24 << 20, 36 << 20},
		{100 << 20, 150 << 20},
		{1 << 62, 1<<60 + 1<<59},
	} {
		if got := memoryLimitFor(c.live); got != c.want {
			t.Errorf("memoryLimitFor(%d) = %d, want %d", c.live, got, c.want)
		}
	}
}
