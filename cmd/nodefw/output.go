package main

import (
	"flag"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/nodefw/nodefw/internal/policytest"
)

// outputFlags choose how trace and test print: text for people, coloured
// only on a terminal and never under NO_COLOR unless asked, or JSON for
// tools.
type outputFlags struct {
	format, color string
}

func (o *outputFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.format, "o", "text", "Output format: text or json.")
	fs.StringVar(&o.color, "color", "auto", "Colour text output: auto (on a terminal, unless NO_COLOR is set), always or never.")
}

func (o *outputFlags) check() error {
	if o.format != "text" && o.format != "json" {
		return usagef("-o: %q is not text or json", o.format)
	}
	if o.color != "auto" && o.color != "always" && o.color != "never" {
		return usagef("--color: %q is not auto, always or never", o.color)
	}
	return nil
}

// write prints v as JSON, or as text with text.
func (o *outputFlags) write(w io.Writer, v any, text func(io.Writer, policytest.Style) error) error {
	if o.format == "json" {
		return writeJSON(w, v)
	}
	return text(w, policytest.Style{Color: o.colored(w)})
}

// colored says whether text to w is coloured.
func (o *outputFlags) colored(w io.Writer) bool {
	switch o.color {
	case "always":
		return true
	case "never":
		return false
	}
	if os.Getenv("NO_COLOR") != "" {
		return false
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
