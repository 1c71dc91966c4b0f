package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/internal/policytest"
)

const samplesDir = "../../config/samples"

// writeTemp writes a file into a test's directory and returns its path.
func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// traceJSON runs trace with -o json and decodes its output.
func traceJSON(t *testing.T, stdin string, args ...string) (int, policytest.Trace, string) {
	t.Helper()
	code, out, stderr := runCLI(t, stdin, append([]string{"trace", "-o", "json"}, args...)...)
	var tr policytest.Trace
	if out != "" {
		if err := json.Unmarshal([]byte(out), &tr); err != nil {
			t.Fatalf("trace -o json prints no trace: %v\n%s", err, out)
		}
	}
	return code, tr, stderr
}

// TestTraceSamples traces packets through the samples: the exit code is
// the verdict, and the deciding step is the one the samples mean.
func TestTraceSamples(t *testing.T) {
	cp := []string{"-f", samplesDir, "--node-labels", "node-role.kubernetes.io/control-plane="}
	worker := []string{"-f", samplesDir, "--node-labels", "zone=a"}
	noFailsafes := []string{"--failsafe-inbound", "none", "--failsafe-outbound", "none"}
	tests := []struct {
		name          string
		args          []string
		wantCode      int
		wantDecidedBy string
		wantSteps     int
	}{
		{"etcd on the control plane", concat(cp, noFailsafes, "--proto", "tcp", "--from", "10.0.0.2", "--to", "10.0.0.1:2380"), exitAccept, "control-plane/etcd", 6},
		{"etcd's neighbour", concat(cp, noFailsafes, "--proto", "tcp", "--from", "10.0.0.2", "--to", "10.0.0.1:2381"), exitDrop, "default", 10},
		{"the failsafe keeps etcd", concat(cp, nil, "--proto", "tcp", "--from", "10.0.0.2", "--to", "10.0.0.1:2379"), exitAccept, "failsafe", 4},
		// A NodePort as the client sent it, before kube-proxy's DNAT:
		// nodeports-from-cidr allows 192.168.0.0/16 and drops the others.
		{"a NodePort from the allowed clients", concat(worker, noFailsafes, "--chain", "prerouting", "--proto", "tcp", "--from", "192.168.3.4:5000", "--to", "10.0.0.2:31000", "--in-interface", "eth0"), exitAccept, "nodeports-from-cidr/tcp-from-clients", 5},
		{"a NodePort from elsewhere", concat(worker, noFailsafes, "--chain", "PreRouting", "--proto", "tcp", "--from", "203.0.113.1:5000", "--to", "10.0.0.2:31000", "--in-interface", "eth0"), exitDrop, "nodeports-from-cidr/tcp-from-others", 7},
		{"a NodePort on a worker's Input, as IPVS shows it", concat(worker, noFailsafes, "--proto", "tcp", "--from", "192.168.3.4:5000", "--to", "10.0.0.2:31000", "--in-interface", "eth0"), exitAccept, "worker/nodeports-ipvs", 6},
		{"replies", concat(worker, noFailsafes, "--proto", "udp", "--from", "203.0.113.1:53", "--to", "10.0.0.2:40000", "--state", "established"), exitAccept, "established", 1},
		// The pod CIDR peer resolves from the Nodes of the --node file.
		{"forward from the pods", concat([]string{"-f", samplesDir, "--node", "testdata/cluster.yaml", "--node-name", "worker-1"}, nil, "--chain", "forward", "--proto", "tcp", "--from", "10.244.1.2", "--to", "10.96.0.1:443", "--in-interface", "cni0", "--out-interface", "eth0"), exitAccept, "worker/pod-cidr-from", 2},
		{"audited output", concat(worker, noFailsafes, "--chain", "Output", "--proto", "tcp", "--from", "2001:db8::2", "--to", "[2001:db8::1]:443"), exitAccept, "default", 7},
		{"ping over IPv6 loopback", concat(worker, noFailsafes, "--proto", "icmpv6", "--from", "::1", "--to", "::1", "--in-interface", "lo"), exitAccept, "loopback", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, tr, stderr := traceJSON(t, "", tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstderr: %s", code, tt.wantCode, stderr)
			}
			if tr.DecidedBy != tt.wantDecidedBy || len(tr.Steps) != tt.wantSteps {
				t.Errorf("decided by %q after %d steps, want %q after %d: %+v", tr.DecidedBy, len(tr.Steps), tt.wantDecidedBy, tt.wantSteps, tr.Steps)
			}
		})
	}
}

func concat(a, b []string, rest ...string) []string {
	return append(append(append([]string{}, a...), b...), rest...)
}

func TestTraceText(t *testing.T) {
	code, out, stderr := runCLI(t, "", "trace", "-f", samplesDir, "--node-labels", "zone=a", "--failsafe-inbound", "tcp:22",
		"--proto", "tcp", "--from", "192.0.2.10:40000", "--to", "10.0.0.2:6443", "--in-interface", "eth0")
	if code != exitDrop {
		t.Fatalf("exit code %d, want %d\n%s", code, exitDrop, stderr)
	}
	want := `node      node (zone=a)
policies  nodeports-from-cidr, worker, strict-output
packet    Input tcp 192.0.2.10:40000 -> 10.0.0.2:6443 in eth0 new

#  STEP                   ACTION  RESULT
   established            Accept  no match on state: New, wants Established or Related
   loopback               Accept  no match on inInterface: eth0, wants lo
   neighbour-discovery    Accept  no match on protocol: tcp, wants ICMPv6
   failsafe               Accept  no match on ports: tcp:6443, wants tcp:22
1  worker/flannel-vxlan   Accept  no match on protocol: tcp, wants UDP
2  worker/kubelet         Accept  no match on ports: 6443, wants 10250
3  worker/nodeports-ipvs  Accept  no match on ports: 6443, wants 30000-32767
   default                Drop    decides: drop

verdict: drop, decided by the Input chain's default action (Drop)
`
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("trace (-want +got):\n%s", diff)
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("colour when stdout is not a terminal:\n%q", out)
	}
	_, colored, _ := runCLI(t, "", "trace", "--color", "always", "-f", samplesDir, "--proto", "tcp", "--from", "192.0.2.10", "--to", "10.0.0.2:6443")
	if !strings.Contains(colored, "\x1b[") {
		t.Errorf("no colour with --color always:\n%s", colored)
	}
}

func TestTraceReject(t *testing.T) {
	policy := writeTemp(t, "reject.yaml", `apiVersion: firewall.nodefw.io/v1alpha1
kind: NodeFirewallPolicy
metadata: {name: reject-web}
spec:
  nodeSelector: {}
  rules:
    - {name: web, chain: Input, protocol: TCP, ports: [{port: 80}], action: Reject}
`)
	code, tr, stderr := traceJSON(t, "", "-f", policy, "--proto", "tcp", "--from", "10.0.0.1", "--to", "10.0.0.2:80")
	if code != exitReject || tr.DecidedBy != "reject-web/web" {
		t.Errorf("exit code %d, decided by %q, want %d and reject-web/web\n%s", code, tr.DecidedBy, exitReject, stderr)
	}
}

// TestTraceNodes: the node comes from Node YAML (a Node, or a list as
// kubectl prints it), from labels, or both.
func TestTraceNodes(t *testing.T) {
	nodes := writeTemp(t, "nodes.yaml", `apiVersion: v1
kind: NodeList
items:
  - metadata:
      name: cp-1
      labels: {node-role.kubernetes.io/control-plane: ""}
  - metadata:
      name: worker-1
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Node
    metadata: {name: worker-2, labels: {zone: b}}
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: not-a-node}
`)
	single := writeTemp(t, "node.yaml", "apiVersion: v1\nkind: Node\nmetadata:\n  name: cp-2\n  labels: {node-role.kubernetes.io/control-plane: \"\"}\n")
	packet := []string{"-f", samplesDir, "--failsafe-inbound", "none", "--proto", "tcp", "--from", "10.0.0.9", "--to", "10.0.0.1:10251"}
	tests := []struct {
		name         string
		args         []string
		wantCode     int
		wantNode     string
		wantPolicies []string
		wantStderr   string
	}{
		{"one node of a list", []string{"--node", nodes, "--node-name", "cp-1"}, exitAccept, "cp-1", []string{"nodeports-from-cidr", "control-plane", "strict-output"}, ""},
		{"a node of a List", []string{"--node", nodes, "--node-name", "worker-2"}, exitDrop, "worker-2", []string{"nodeports-from-cidr", "worker", "strict-output"}, ""},
		{"the only node", []string{"--node", single}, exitAccept, "cp-2", []string{"nodeports-from-cidr", "control-plane", "strict-output"}, ""},
		{"several nodes, none named", []string{"--node", nodes}, exitUsage, "", nil, "hold 3 nodes: pick one with --node-name"},
		{"an unknown name", []string{"--node", nodes, "--node-name", "cp-9"}, exitUsage, "", nil, `no node "cp-9" in the --node files`},
		{"labels beside the files", []string{"--node", nodes, "--node-labels", "zone=c"}, exitDrop, "node", []string{"nodeports-from-cidr", "worker", "strict-output"}, ""},
		{"labels under a taken name", []string{"--node", nodes, "--node-labels", "zone=c", "--node-name", "cp-1"}, exitUsage, "", nil, `a node named "cp-1" is in the --node files`},
		{"labels alone, named", []string{"--node-labels", "zone=c", "--node-name", "w9"}, exitDrop, "w9", []string{"nodeports-from-cidr", "worker", "strict-output"}, ""},
		{"no Node in a file", []string{"--node", filepath.Join(samplesDir, "kustomization.yaml")}, exitError, "", nil, "no Node objects"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, tr, stderr := traceJSON(t, "", append(packet, tt.args...)...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("exit code %d, stderr %q; want %d and %q", code, stderr, tt.wantCode, tt.wantStderr)
			}
			if tr.Node != tt.wantNode || !cmp.Equal(tr.Policies, tt.wantPolicies) {
				t.Errorf("node %q with policies %v, want %q with %v", tr.Node, tr.Policies, tt.wantNode, tt.wantPolicies)
			}
		})
	}
}

func TestTraceStdinAndFiles(t *testing.T) {
	worker, err := os.ReadFile(filepath.Join(samplesDir, "firewall_v1alpha1_nodefirewallpolicy_worker.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	packet := []string{"--failsafe-inbound", "none", "--proto", "tcp", "--from", "10.0.0.9", "--to", "10.0.0.1:10250"}
	code, tr, stderr := traceJSON(t, string(worker), append([]string{"-f", "-"}, packet...)...)
	if code != exitAccept || tr.DecidedBy != "worker/kubelet" || !cmp.Equal(tr.Policies, []string{"worker"}) {
		t.Errorf("from stdin: exit code %d, decided by %q, policies %v\n%s", code, tr.DecidedBy, tr.Policies, stderr)
	}
	code, _, stderr = traceJSON(t, "", append([]string{"-f", "-", "--node", "-"}, packet...)...)
	if code != exitUsage || !strings.Contains(stderr, "only one of -f and --node can read stdin") {
		t.Errorf("-f - and --node -: exit code %d, stderr %q", code, stderr)
	}
	code, _, stderr = traceJSON(t, "", append([]string{"-f", t.TempDir()}, packet...)...)
	if code != exitError || !strings.Contains(stderr, "no .yaml, .yml or .json files") {
		t.Errorf("an empty directory: exit code %d, stderr %q", code, stderr)
	}
}

func TestTraceUsage(t *testing.T) {
	packet := []string{"--proto", "tcp", "--from", "10.0.0.1", "--to", "10.0.0.2:80"}
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"no policies", packet, exitUsage, "-f (policy files) or --live NODE is required"},
		{"an unknown flag", []string{"--port", "80"}, exitUsage, "flag provided but not defined: -port"},
		{"an argument", append([]string{"-f", samplesDir, "extra"}, packet...), exitUsage, "trace takes no arguments"},
		{"a bad packet", []string{"-f", samplesDir, "--proto", "tcp", "--from", "10.0.0.1", "--to", "10.0.0.2"}, exitUsage, "packet: to: tcp needs a port"},
		{"a bad chain", append([]string{"-f", samplesDir, "--chain", "nat"}, packet...), exitUsage, `chain: "nat" is not one of PreRouting, Input, Forward, Output`},
		{"bad failsafes", append([]string{"-f", samplesDir, "--failsafe-inbound", "ssh"}, packet...), exitUsage, "--failsafe-inbound"},
		{"bad labels", append([]string{"-f", samplesDir, "--node-labels", "a=b=c"}, packet...), exitUsage, "--node-labels"},
		{"a bad output", append([]string{"-f", samplesDir, "-o", "yaml"}, packet...), exitUsage, `-o: "yaml" is not text or json`},
		{"a bad colour", append([]string{"-f", samplesDir, "--color", "red"}, packet...), exitUsage, `--color: "red" is not auto`},
		{"--live with files", append([]string{"-f", samplesDir, "--live", "node-1"}, packet...), exitUsage, "--live traces the cluster's NodeFirewall"},
		{"a missing file", append([]string{"-f", "no-such-file.yaml"}, packet...), exitError, "no-such-file.yaml"},
		{"help", []string{"-h"}, exitAccept, "-proto"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := runCLI(t, "", append([]string{"trace"}, tt.args...)...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("exit code %d, stderr %q; want %d and %q", code, stderr, tt.wantCode, tt.wantStderr)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
		})
	}
}

// TestTraceImported traces packets through the policy that `nodefw
// import` makes of an iptables-save file: its rules, its DROP policy and
// its REJECT, on every node.
func TestTraceImported(t *testing.T) {
	code, policy, stderr := runCLI(t, iptablesSave, "import", "--name", "legacy")
	if code != 0 {
		t.Fatalf("import: exit code %d\n%s", code, stderr)
	}
	path := writeTemp(t, "legacy.yaml", policy)
	tests := []struct {
		name          string
		packet        []string
		wantCode      int
		wantDecidedBy string
	}{
		{"ssh", []string{"--proto", "tcp", "--from", "192.0.2.1", "--to", "10.0.0.2:22"}, exitAccept, "legacy/input-tcp-22"},
		{"vxlan", []string{"--proto", "udp", "--from", "192.0.2.1", "--to", "10.0.0.2:8472"}, exitAccept, "legacy/input-udp-8472"},
		{"new from 10/8 on eth0", []string{"--proto", "tcp", "--from", "10.1.1.1", "--to", "10.0.0.2:9000", "--in-interface", "eth0"}, exitAccept, "legacy/input-in-eth0-from-10-0-0-0-8-new"},
		{"10/8 on another interface", []string{"--proto", "tcp", "--from", "10.1.1.1", "--to", "10.0.0.2:9000", "--in-interface", "eth1"}, exitDrop, "default"},
		{"a NodePort", []string{"--proto", "tcp", "--from", "192.0.2.1", "--to", "10.0.0.2:30500"}, exitAccept, "legacy/input-tcp-30000-32767"},
		{"forwarded pods", []string{"--chain", "Forward", "--proto", "udp", "--from", "10.244.3.3", "--to", "10.0.0.9:53"}, exitAccept, "legacy/flanneld-forward"},
		{"the rejected address", []string{"--chain", "Output", "--proto", "tcp", "--from", "10.0.0.2", "--to", "192.0.2.1:443"}, exitReject, "legacy/output-to-192-0-2-1-32-reject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"-f", path, "--failsafe-inbound", "none", "--failsafe-outbound", "none"}, tt.packet...)
			code, tr, stderr := traceJSON(t, "", args...)
			if code != tt.wantCode || tr.DecidedBy != tt.wantDecidedBy {
				t.Errorf("exit code %d, decided by %q; want %d and %q\nstderr: %s\nsteps: %+v", code, tr.DecidedBy, tt.wantCode, tt.wantDecidedBy, stderr, tr.Steps)
			}
		})
	}
}
