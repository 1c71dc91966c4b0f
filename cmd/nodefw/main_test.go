package main

import (
	"bytes"
	"strings"
	"testing"
)

// runCLI runs the CLI with args and stdin and returns its exit code and
// outputs.
func runCLI(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, strings.NewReader(stdin), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "no command", args: nil, wantCode: 2, wantStderr: "Usage:"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantStderr: `unknown command "frobnicate"`},
		{name: "flag as command", args: []string{"--kubeconfig", "x"}, wantCode: 2, wantStderr: "unknown command"},
		{name: "help", args: []string{"help"}, wantCode: 0, wantStdout: "nodefw render -f policy.yaml"},
		{name: "-h", args: []string{"-h"}, wantCode: 0, wantStdout: "Usage:"},
		{name: "help names trace", args: []string{"help"}, wantCode: 0, wantStdout: "Exit code: 0 accept, 3 drop, 4 reject, 1 error, 2 usage."},
		{name: "help names test", args: []string{"help"}, wantCode: 0, wantStdout: "nodefw test -f policy.yaml TESTS.yaml..."},
		{name: "--help", args: []string{"--help"}, wantCode: 0, wantStdout: "nodefw import"},
		{name: "unknown flag", args: []string{"render", "--no-such-flag"}, wantCode: 1, wantStderr: "no-such-flag"},
		{name: "render without -f", args: []string{"render"}, wantCode: 1, wantStderr: "-f is required"},
		{name: "render of a missing file", args: []string{"render", "-f", "does-not-exist.yaml"}, wantCode: 1, wantStderr: "does-not-exist.yaml"},
		{name: "import with a bad priority", args: []string{"import", "--priority", "10001"}, wantCode: 1, wantStderr: "--priority"},
		{name: "import with a bad mode", args: []string{"import", "--mode", "Loud"}, wantCode: 1, wantStderr: "invalid mode"},
		{name: "import with a bad name", args: []string{"import", "--name", "Not_A_Name"}, wantCode: 1, wantStderr: "invalid policy name"},
		{name: "import with a bad selector", args: []string{"import", "--node-selector", "a=b=c"}, wantCode: 1, wantStderr: "--node-selector"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, "", tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, stdout, stderr)
			}
			if !strings.Contains(stdout, tt.wantStdout) {
				t.Errorf("stdout does not contain %q:\n%s", tt.wantStdout, stdout)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantStderr, stderr)
			}
		})
	}
}
