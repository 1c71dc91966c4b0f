package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// seedTests are the sample policies' test cases.
var seedTests = filepath.Join(samplesDir, "nodefw-tests.yaml")

// TestSeedTests runs the test file shipped with the samples against them:
// every case passes.
func TestSeedTests(t *testing.T) {
	code, out, stderr := runCLI(t, "", "test", "-f", samplesDir, seedTests)
	if code != exitPassed {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	summary := regexp.MustCompile(`\n(\d+) cases: (\d+) passed, 0 failed\n$`).FindStringSubmatch(out)
	if summary == nil || summary[1] != summary[2] || summary[1] == "0" {
		t.Errorf("no summary of passed cases:\n%s", out)
	}
	if strings.Contains(out, "FAIL") {
		t.Errorf("a case failed:\n%s", out)
	}
	// The file covers what the samples are about.
	for _, decider := range []string{
		"control-plane/kube-apiserver", "control-plane/etcd", "control-plane/kubelet", "worker/kubelet", "worker/nodeports",
		"worker/pod-cidr-from", "worker/pod-cidr-to", "strict-output/to-control-plane", "failsafe", "established", "default",
	} {
		if !strings.Contains(out, "  "+decider+"\n") {
			t.Errorf("no case decided by %s:\n%s", decider, out)
		}
	}
}

// failingTests expects the wrong verdict of one case and the wrong
// decider of another.
const failingTests = `failsafeInbound: none
cases:
  - name: kubelet on a worker
    nodeLabels: {}
    packet: {proto: tcp, from: 192.0.2.1, to: "10.0.0.2:10250"}
    verdict: Accept
    decidedBy: worker/kubelet
  - name: etcd on a worker
    nodeLabels: {}
    packet: {proto: tcp, from: 192.0.2.1, to: "10.0.0.2:2379"}
    verdict: Accept
  - name: vxlan on a worker
    nodeLabels: {}
    packet: {proto: udp, from: 192.0.2.1, to: "10.0.0.2:8472"}
    verdict: Accept
    decidedBy: worker/kubelet
`

func TestTestFailures(t *testing.T) {
	path := writeTemp(t, "failing.yaml", failingTests)
	code, out, stderr := runCLI(t, "", "test", "-f", samplesDir, path)
	if code != exitFailed {
		t.Fatalf("exit code %d, want %d\n%s\n%s", code, exitFailed, out, stderr)
	}
	for _, want := range []string{
		"\n--- FAIL: etcd on a worker\nverdict drop, want accept\n",
		"\n--- FAIL: vxlan on a worker\ndecided by worker/flannel-vxlan, want worker/kubelet\n",
		"worker/flannel-vxlan (want worker/kubelet)\n",
		"\n3 cases: 1 passed, 2 failed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not contain %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "--- PASS") {
		t.Errorf("a passed case's trace without -v:\n%s", out)
	}

	// The failsafes of the flags replace the file's: with the default
	// inbound failsafes the kubelet is the failsafe's, and etcd too.
	code, out, _ = runCLI(t, "", "test", "-f", samplesDir, path, "--failsafe-inbound", "tcp:10250,tcp:2379-2380", "-v")
	if code != exitFailed || !strings.Contains(out, "decided by failsafe, want worker/kubelet") || !strings.Contains(out, "--- PASS: etcd on a worker") {
		t.Errorf("with --failsafe-inbound and -v: exit code %d:\n%s", code, out)
	}
}

func TestTestJSON(t *testing.T) {
	path := writeTemp(t, "failing.yaml", failingTests)
	code, out, _ := runCLI(t, "", "test", "-o", "json", path, "-f", samplesDir)
	if code != exitFailed {
		t.Fatalf("exit code %d", code)
	}
	var report struct {
		Results []struct {
			Case struct {
				Name string `json:"name"`
			} `json:"case"`
			Trace struct {
				Verdict   string `json:"verdict"`
				DecidedBy string `json:"decidedBy"`
			} `json:"trace"`
			Pass     bool     `json:"pass"`
			Failures []string `json:"failures"`
		} `json:"results"`
		Passed, Failed int
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if report.Passed != 1 || report.Failed != 2 || len(report.Results) != 3 {
		t.Fatalf("passed %d, failed %d, %d results", report.Passed, report.Failed, len(report.Results))
	}
	if r := report.Results[1]; r.Case.Name != "etcd on a worker" || r.Pass || r.Trace.Verdict != "drop" || r.Trace.DecidedBy != "default" || len(r.Failures) != 1 {
		t.Errorf("second result %+v", r)
	}
}

func TestTestSeveralFiles(t *testing.T) {
	const cases = "cases:\n  - {name: kubelet, nodeLabels: {}, packet: {proto: tcp, from: 192.0.2.1, to: \"10.0.0.2:10250\"}, verdict: Accept}\n"
	a, b := writeTemp(t, "a.yaml", cases), writeTemp(t, "b.yaml", cases)
	code, out, stderr := runCLI(t, "", "test", a, "-f", samplesDir, b)
	if code != exitPassed || !strings.Contains(out, "a.yaml: kubelet") || !strings.Contains(out, "b.yaml: kubelet") || !strings.Contains(out, "2 cases: 2 passed") {
		t.Errorf("exit code %d\n%s\n%s", code, out, stderr)
	}
}

func TestTestInvalid(t *testing.T) {
	invalid := writeTemp(t, "invalid.yaml", "cases:\n  - {name: x, packet: {proto: tcp, from: 1.2.3.4, to: 1.2.3.5}, verdict: Maybe}\n")
	tests := []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{"no policies", []string{seedTests}, "-f (policy files) is required"},
		{"no test file", []string{"-f", samplesDir}, "name at least one test file"},
		{"an invalid test file", []string{"-f", samplesDir, invalid}, `verdict "Maybe" is not Accept, Drop or Reject`},
		{"a missing test file", []string{"-f", samplesDir, "no-such-tests.yaml"}, "no-such-tests.yaml"},
		{"a missing policy file", []string{"-f", "no-such-policy.yaml", seedTests}, "no-such-policy.yaml"},
		{"bad failsafes", []string{"-f", samplesDir, seedTests, "--failsafe-outbound", "dns"}, "--failsafe-outbound"},
		{"a bad output", []string{"-f", samplesDir, seedTests, "-o", "table"}, `-o: "table" is not text or json`},
		{"an unknown flag", []string{"-f", samplesDir, seedTests, "--strict"}, "flag provided but not defined: -strict"},
		{"stdin twice", []string{"-f", "-", "-"}, "only one of -f and the test files can read stdin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := runCLI(t, "", append([]string{"test"}, tt.args...)...)
			if code != exitInvalid || !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("exit code %d, stderr %q; want %d and %q", code, stderr, exitInvalid, tt.wantStderr)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
		})
	}
}
