package controllers

import (
	"testing"
	"time"
)

func TestCollectNow(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name          string
		wrote, moving bool
		putOff        time.Time
		want          bool
	}{
		{name: "a quiet pass collects", want: true},
		{name: "a pass that wrote does not", wrote: true, putOff: now.Add(-time.Hour)},
		{name: "a moving rollout puts it off", moving: true},
		{name: "for less than the limit", moving: true, putOff: now.Add(-collectionPutOffLimit + time.Second)},
		{name: "then collects while it moves", moving: true, putOff: now.Add(-collectionPutOffLimit - time.Second), want: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := collectNow(tc.wrote, tc.moving, tc.putOff, now); got != tc.want {
				t.Errorf("collectNow(wrote %v, moving %v, put off %v ago) = %v, want %v", tc.wrote, tc.moving, now.Sub(tc.putOff), got, tc.want)
			}
		})
	}
}
