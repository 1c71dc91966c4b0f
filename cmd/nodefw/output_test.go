package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// openTerminal opens the two ends of a pseudo-terminal and returns the
// terminal end, which term.IsTerminal recognises.
func openTerminal(t *testing.T) *os.File {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminal to test colour detection on: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty
}

func TestColored(t *testing.T) {
	tty := openTerminal(t)
	file, err := os.Create(t.TempDir() + "/out")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	tests := []struct {
		name, color, noColor string
		out                  io.Writer
		want                 bool
	}{
		{"auto, a terminal", "auto", "", tty, true},
		{"auto, a terminal, NO_COLOR", "auto", "1", tty, false},
		{"auto, a file", "auto", "", file, false},
		{"auto, a buffer", "auto", "", &bytes.Buffer{}, false},
		{"always, a file, NO_COLOR", "always", "1", file, true},
		{"never, a terminal", "never", "", tty, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NO_COLOR", tt.noColor)
			o := outputFlags{format: "text", color: tt.color}
			if got := o.colored(tt.out); got != tt.want {
				t.Errorf("colored = %v, want %v", got, tt.want)
			}
		})
	}
}
