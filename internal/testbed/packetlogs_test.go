package testbed

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPacketLogs: only the packet lines written after the offset, and not
// a line still being written, are read.
func TestPacketLogs(t *testing.T) {
	p := &Process{Name: "agent-x", Log: filepath.Join(t.TempDir(), "agent-x.log")}
	before := `{"time":"2026-01-12T09:14:03Z","kind":"packet","node":"x","policy":"p","rule":"old","verdict":"drop","family":"ipv4"}` + "\n"
	if err := os.WriteFile(p.Log, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	off, err := p.LogOffset()
	if err != nil {
		t.Fatal(err)
	}
	if off != int64(len(before)) {
		t.Fatalf("offset %d, want %d", off, len(before))
	}
	after := `I1203 12:00:00.000000 1 agent.go:1] programmed` + "\n" +
		`{"time":"2026-01-12T09:14:04Z","kind":"packet","node":"x","policy":"p","rule":"r","verdict":"audit","family":"ipv4","protocol":"tcp","source":"10.0.0.1","destination":"10.0.0.2","sourcePort":40000,"destinationPort":22}` + "\n" +
		`{"level":"info","msg":"not a packet"}` + "\n" +
		`{"time":"2026-01-12T09:14:05Z","kind":"packet","node":"x","policy":"p","rule":"unfinished"`
	f, err := os.OpenFile(p.Log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(after); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := p.PacketLogs(off)
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, r := range got {
		rules = append(rules, r.Rule+" "+r.Verdict+" "+r.Source.String()+" "+r.Destination.String())
	}
	if diff := cmp.Diff([]string{"r audit 10.0.0.1 10.0.0.2"}, rules); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if got[0].SourcePort == nil || *got[0].SourcePort != 40000 || *got[0].DestPort != 22 {
		t.Errorf("ports %v %v", got[0].SourcePort, got[0].DestPort)
	}
}
