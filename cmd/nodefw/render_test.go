package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

const (
	workerSample       = "../../config/samples/firewall_v1alpha1_nodefirewallpolicy_worker.yaml"
	controlPlaneSample = "../../config/samples/firewall_v1alpha1_nodefirewallpolicy_control_plane.yaml"
	strictOutputSample = "../../config/samples/firewall_v1alpha1_nodefirewallpolicy_strict_output.yaml"
	nodePortsSample    = "../../config/samples/firewall_v1alpha1_nodefirewallpolicy_nodeports_from_cidr.yaml"
)

// podCIDRsSet is the set of the samples' podCIDRs: {} peer.
var podCIDRsSet = func() string {
	name, err := fwv1.Peer{PodCIDRs: &metav1.LabelSelector{}}.SetName()
	if err != nil {
		panic(err)
	}
	return name
}()

// Rules of the samples, as rendered.
var (
	workerRules = []string{
		`meta l4proto udp th dport 8472 counter accept comment "worker/flannel-vxlan"`,
		`meta l4proto tcp th dport 10250 counter accept comment "worker/kubelet"`,
		"type filter hook prerouting priority -110; policy accept;",
		`fib daddr type != local accept comment "nodefw: not addressed to the node"`,
		`meta l4proto tcp th dport 30000-32767 counter accept comment "worker/nodeports"`,
		`meta l4proto tcp th dport 30000-32767 counter accept comment "worker/nodeports-ipvs"`,
		`ip saddr @peer-v4-` + podCIDRsSet + ` counter accept comment "worker/pod-cidr-from"`,
		`ip6 saddr @peer-v6-` + podCIDRsSet + ` counter accept comment "worker/pod-cidr-from"`,
		`ip daddr @peer-v4-` + podCIDRsSet + ` counter accept comment "worker/pod-cidr-to"`,
		`ip6 daddr @peer-v6-` + podCIDRsSet + ` counter accept comment "worker/pod-cidr-to"`,
	}
	controlPlaneRules = []string{
		`meta l4proto udp th dport 8472 counter accept comment "control-plane/flannel-vxlan"`,
		`meta l4proto tcp th dport 6443 counter accept comment "control-plane/kube-apiserver"`,
		`meta l4proto tcp th dport 2379-2380 counter accept comment "control-plane/etcd"`,
		`meta l4proto tcp th dport 10250 counter accept comment "control-plane/kubelet"`,
		`meta l4proto tcp th dport 10251 counter accept comment "control-plane/kube-scheduler"`,
		`meta l4proto tcp th dport 10252 counter accept comment "control-plane/kube-controller-manager"`,
		`ip saddr @peer-v4-` + podCIDRsSet + ` counter accept comment "control-plane/pod-cidr-from"`,
		`ip6 saddr @peer-v6-` + podCIDRsSet + ` counter accept comment "control-plane/pod-cidr-from"`,
		`ip daddr @peer-v4-` + podCIDRsSet + ` counter accept comment "control-plane/pod-cidr-to"`,
		`ip6 daddr @peer-v6-` + podCIDRsSet + ` counter accept comment "control-plane/pod-cidr-to"`,
	}
)

func TestRenderSamples(t *testing.T) {
	tests := []struct {
		name string
		args []string
		// want are lines the ruleset must hold, wantNot substrings no
		// line may hold.
		want    []string
		wantNot []string
	}{
		{
			name: "worker sample, worker node",
			args: []string{"-f", workerSample, "--node-labels", "zone=a"},
			want: append([]string{
				"# node node zone=a: policies worker",
				"type filter hook input priority 10; policy drop;",
				"type filter hook forward priority 10; policy accept;",
			}, workerRules...),
			wantNot: []string{"control-plane/", "kube-apiserver", "2379-2380 counter accept comment"},
		},
		{
			name: "worker sample, control-plane node",
			args: []string{"-f", workerSample, "--node-labels", "node-role.kubernetes.io/control-plane="},
			want: []string{
				"# node node node-role.kubernetes.io/control-plane=: policies \n",
				"type filter hook input priority 10; policy accept;",
			},
			wantNot: []string{"worker/"},
		},
		{
			name: "both samples, worker node",
			args: []string{"-f", workerSample, "-f", controlPlaneSample, "--node-labels", "zone=a", "--node-name", "w1"},
			want: append([]string{
				"# node w1 zone=a: policies worker",
				"type filter hook input priority 10; policy drop;",
			}, workerRules...),
			wantNot: []string{"control-plane/", "th dport 6443 counter"},
		},
		{
			name: "both samples, control-plane node",
			args: []string{"-f", workerSample, "-f", controlPlaneSample, "--node-labels", "node-role.kubernetes.io/control-plane="},
			want: append([]string{
				"policies control-plane",
				"type filter hook input priority 10; policy drop;",
			}, controlPlaneRules...),
			wantNot: []string{"worker/", "30000-32767", "prerouting"},
		},
		{
			name: "NodePorts from a CIDR, on every node, before the worker policy",
			args: []string{"-f", workerSample, "-f", nodePortsSample, "--node-labels", "zone=a", "--failsafe-inbound", "none"},
			want: []string{
				"# node node zone=a: policies nodeports-from-cidr, worker",
				"type filter hook prerouting priority -110; policy accept;\n" +
					"\t\tct state established,related accept comment \"nodefw: established,related\"\n" +
					"\t\tfib daddr type != local accept comment \"nodefw: not addressed to the node\"\n" +
					"\t\tiifname \"lo\" accept comment \"nodefw: loopback\"\n" +
					"\t\ticmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } accept comment \"nodefw: icmpv6 neighbour discovery\"\n" +
					"\t\tip saddr 192.168.0.0/16 meta l4proto tcp th dport 30000-32767 counter accept comment \"nodeports-from-cidr/tcp-from-clients\"\n" +
					"\t\tip saddr 192.168.0.0/16 meta l4proto udp th dport 30000-32767 counter accept comment \"nodeports-from-cidr/udp-from-clients\"\n" +
					"\t\tmeta l4proto tcp th dport 30000-32767 counter drop comment \"nodeports-from-cidr/tcp-from-others\"\n" +
					"\t\tmeta l4proto udp th dport 30000-32767 counter drop comment \"nodeports-from-cidr/udp-from-others\"\n" +
					"\t\tmeta l4proto tcp th dport 30000-32767 counter accept comment \"worker/nodeports\"\n" +
					"\t}",
			},
		},
		{
			name: "NodePorts from a CIDR on a control-plane node",
			args: []string{"-f", workerSample, "-f", controlPlaneSample, "-f", nodePortsSample, "--node-labels", "node-role.kubernetes.io/control-plane="},
			want: []string{
				"policies nodeports-from-cidr, control-plane",
				"type filter hook prerouting priority -110; policy accept;",
				`meta l4proto tcp th dport 30000-32767 counter drop comment "nodeports-from-cidr/tcp-from-others"`,
			},
			wantNot: []string{"worker/"},
		},
		{
			name: "failsafes",
			args: []string{"-f", workerSample},
			want: []string{
				`meta l4proto tcp th dport { 22, 2379-2380, 6443, 10250 } counter accept comment "nodefw: failsafe tcp"`,
				`meta l4proto udp th dport 67-68 counter accept comment "nodefw: failsafe udp"`,
				`meta l4proto tcp th dport { 53, 6443 } counter accept comment "nodefw: failsafe tcp"`,
				`meta l4proto udp th dport { 53, 67-68 } counter accept comment "nodefw: failsafe udp"`,
			},
		},
		{
			name:    "no failsafes",
			args:    []string{"-f", workerSample, "--failsafe-inbound", "none", "--failsafe-outbound", "none"},
			want:    workerRules,
			wantNot: []string{"failsafe"},
		},
		{
			name: "other failsafes and table",
			args: []string{"-f", workerSample, "--failsafe-inbound", "tcp:2222", "--failsafe-outbound", "none", "--table", "fw"},
			want: []string{
				"table inet fw {",
				`meta l4proto tcp th dport 2222 counter accept comment "nodefw: failsafe tcp"`,
			},
			wantNot: []string{"table inet nodefw", "6443"},
		},
		{
			name: "audit mode",
			args: []string{"-f", strictOutputSample, "-f", "testdata/cluster.yaml", "--node-name", "worker-1"},
			want: []string{
				"type filter hook output priority 10; policy accept;",
				`ip daddr @peer-v4-nodefw-nodes-`,
				"\t\t\t192.168.0.10\n",
				"\t\t\tfd00:10:244::/64\n",
				`counter limit rate 10/minute burst 5 packets log prefix "nfw audit strict-output:output" group 100 comment "nodefw: audit default-drop"`,
			},
			wantNot: []string{"policy drop;"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := runCLI(t, "", append([]string{"render"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit code %d\nstderr:\n%s", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("ruleset does not contain %q:\n%s", w, out)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(out, w) {
					t.Errorf("ruleset contains %q:\n%s", w, out)
				}
			}
			nftCheck(t, out)
		})
	}
}

// TestRenderIsReproducible checks that the same input renders the same
// text, whatever the order of the files: a diff in review then means a
// change in the ruleset.
func TestRenderIsReproducible(t *testing.T) {
	args := []string{"render", "-f", workerSample, "-f", controlPlaneSample, "-f", strictOutputSample, "--node-labels", "zone=a,node-role.kubernetes.io/worker="}
	_, first, _ := runCLI(t, "", args...)
	_, again, _ := runCLI(t, "", args...)
	reversed := []string{"render", "-f", strictOutputSample, "-f", controlPlaneSample, "-f", workerSample, "--node-labels", "node-role.kubernetes.io/worker=,zone=a"}
	_, rev, _ := runCLI(t, "", reversed...)
	if first != again || first != rev {
		t.Errorf("renderings differ:\n%s\n---\n%s\n---\n%s", first, again, rev)
	}
	if !strings.Contains(first, "policies worker, strict-output") {
		t.Errorf("policies not in evaluation order:\n%s", first)
	}
}

func TestRenderMultiDocumentAndDefaults(t *testing.T) {
	// A file mixing kinds, as a kustomize build prints it: only policies
	// count, and an absent priority takes the CRD's default (1000), so
	// "late" with priority 2000 comes after "default".
	const manifests = `apiVersion: v1
kind: ConfigMap
metadata:
  name: unrelated
---
apiVersion: firewall.nodefw.io/v1alpha1
kind: NodeFirewallPolicy
metadata:
  name: late
spec:
  nodeSelector: {}
  priority: 2000
  rules:
    - {name: ssh, chain: Input, protocol: TCP, ports: [{port: 2222}], action: Drop}
---
apiVersion: firewall.nodefw.io/v1alpha1
kind: NodeFirewallPolicy
metadata:
  name: default
spec:
  nodeSelector: {}
  rules:
    - {name: web, chain: Input, protocol: TCP, ports: [{port: 443}], action: Accept}
`
	path := filepath.Join(t.TempDir(), "all.yaml")
	if err := os.WriteFile(path, []byte(manifests), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI(t, "", "render", "-f", path)
	if code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s", code, stderr)
	}
	web := strings.Index(out, `comment "default/web"`)
	ssh := strings.Index(out, `meta l4proto tcp th dport 2222 counter drop comment "late/ssh"`)
	if web < 0 || ssh < 0 || web > ssh {
		t.Errorf("want default/web before late/ssh:\n%s", out)
	}
	nftCheck(t, out)
}

// TestRenderWarnsAsPolicyStatusDoes: render prints the problems the
// controller puts in policy status, failsafe shadows with the agents'
// failsafe ports included, and a default-action conflict to both policies:
// the Drop wins although the Accept's policy comes first (priority 0).
func TestRenderWarnsAsPolicyStatusDoes(t *testing.T) {
	const policies = `apiVersion: firewall.nodefw.io/v1alpha1
kind: NodeFirewallPolicy
metadata:
  name: first
spec:
  nodeSelector: {}
  priority: 1
  defaultActions: {input: Drop}
---
apiVersion: firewall.nodefw.io/v1alpha1
kind: NodeFirewallPolicy
metadata:
  name: lockdown
spec:
  nodeSelector: {}
  priority: 0
  defaultActions: {input: Accept}
  rules:
    - {name: web, chain: Input, protocol: TCP, ports: [{port: 443}], action: Accept}
    - {name: block-ssh, chain: Input, protocol: TCP, ports: [{port: 22}], action: Drop}
`
	path := filepath.Join(t.TempDir(), "lockdown.yaml")
	if err := os.WriteFile(path, []byte(policies), 0o600); err != nil {
		t.Fatal(err)
	}
	conflict := `warning: policy first: spec.defaultActions.input=Drop overrides policy "lockdown", which sets Accept: the more restrictive default wins, on 1 node(s): node` + "\n" +
		`warning: policy lockdown: spec.defaultActions.input=Accept is overridden by policy "first", which sets Drop: the more restrictive default wins, on 1 node(s): node` + "\n"
	shadow := "warning: policy lockdown: spec.rules[1] (block-ssh) would drop failsafe port(s) tcp:22, which nodes accept before any rule\n"
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"default failsafes", nil, conflict + shadow},
		{"the agents' failsafes", []string{"--failsafe-inbound", "tcp:2222"}, conflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := runCLI(t, "", append([]string{"render", "-f", path}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit code %d\nstderr:\n%s", code, stderr)
			}
			if diff := cmp.Diff(tc.want, stderr); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			// lockdown (priority 0) comes first, and its Accept still loses.
			if !strings.Contains(out, "policies lockdown, first") || !strings.Contains(out, "hook input priority 10; policy drop;") {
				t.Errorf("want lockdown first and the input chain's policy drop:\n%s", out)
			}
		})
	}
}

func TestRenderRejectsUnknownFields(t *testing.T) {
	const policy = `apiVersion: firewall.nodefw.io/v1alpha1
kind: NodeFirewallPolicy
metadata:
  name: typo
spec:
  nodeSelector: {}
  rules:
    - {name: ssh, chain: Input, protocol: TCP, port: 22, action: Accept}
`
	path := filepath.Join(t.TempDir(), "typo.yaml")
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, "", "render", "-f", path)
	if code != 1 || !strings.Contains(stderr, "port") {
		t.Errorf("exit code %d, stderr %q: want 1 and the unknown field named", code, stderr)
	}
}

// nftCheck has nft parse and check the ruleset against the kernel without
// committing it (`nft -c`), when nft is installed and we may use it.
func nftCheck(t *testing.T, ruleset string) {
	t.Helper()
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Log("nft not installed: ruleset not checked by nft")
		return
	}
	if os.Geteuid() != 0 {
		t.Log("not root: ruleset not checked by nft")
		return
	}
	cmd := exec.Command(nft, "-c", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Errorf("nft -c -f - rejects the ruleset: %v\n%s\nruleset:\n%s", err, stderr.String(), ruleset)
	}
}

// TestRenderReadsNodeFirewallConfig: a NodeFirewallConfig among the files
// gives the failsafes (addresses included) and set lookups the agents
// would use, and the warnings the controller would give with it; without
// one, the flags do.
func TestRenderReadsNodeFirewallConfig(t *testing.T) {
	const manifests = `apiVersion: firewall.nodefw.io/v1alpha1
kind: NodeFirewallConfig
metadata:
  name: default
spec:
  failsafes:
    inbound:
      - {protocol: TCP, ports: [{port: 22}]}
      - {protocol: TCP, ports: [{port: 2379, endPort: 2380}], sources: [10.0.0.0/24]}
    outbound: []
---
apiVersion: firewall.nodefw.io/v1alpha1
kind: NodeFirewallPolicy
metadata:
  name: etcd
spec:
  nodeSelector: {}
  defaultActions: {input: Drop}
  rules:
    - {name: no-etcd-from-pods, chain: Input, protocol: TCP, ports: [{port: 2379}], sources: [10.244.0.0/16], action: Drop}
    - {name: no-etcd, chain: Input, protocol: TCP, ports: [{port: 2379}], action: Drop}
`
	path := filepath.Join(t.TempDir(), "with-config.yaml")
	if err := os.WriteFile(path, []byte(manifests), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI(t, "", "render", "-f", path)
	if code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s", code, stderr)
	}
	for _, want := range []string{
		`meta l4proto tcp th dport 22 counter accept comment "nodefw: failsafe tcp"`,
		`ip saddr 10.0.0.0/24 meta l4proto tcp th dport 2379-2380 counter accept comment "nodefw: failsafe tcp by address"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the ruleset lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "dport { 53") || strings.Contains(out, "6443") {
		t.Errorf("the config's failsafes must replace the flags' defaults:\n%s", out)
	}
	// Only the rule whose sources meet the failsafe's is shadowed.
	want := "warning: policy etcd: spec.rules[1] (no-etcd) would drop failsafe port(s) tcp:2379-2380 from 10.0.0.0/24, which nodes accept before any rule\n"
	if stderr != want {
		t.Errorf("warnings:\n%s\nwant:\n%s", stderr, want)
	}
	nftCheck(t, out)

	bad := strings.Replace(manifests, "10.0.0.0/24", "10.0.0.300/24", 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI(t, "", "render", "-f", path); code != 1 || !strings.Contains(stderr, `"10.0.0.300/24" is not an IP address or CIDR`) {
		t.Errorf("a malformed NodeFirewallConfig: exit code %d, stderr %q; want 1 and the address named", code, stderr)
	}
}

// TestRenderDirectory: -f takes a directory, whose manifests count as if
// each were named (its other files, the kustomization and the test cases,
// hold no policy).
func TestRenderDirectory(t *testing.T) {
	labels := []string{"--node-labels", "node-role.kubernetes.io/control-plane="}
	code, fromDir, stderr := runCLI(t, "", append([]string{"render", "-f", "../../config/samples"}, labels...)...)
	if code != 0 {
		t.Fatalf("exit code %d\n%s", code, stderr)
	}
	_, fromFiles, _ := runCLI(t, "", append([]string{"render", "-f", workerSample, "-f", controlPlaneSample, "-f", strictOutputSample, "-f", nodePortsSample}, labels...)...)
	if diff := cmp.Diff(fromFiles, fromDir); diff != "" {
		t.Errorf("render of the directory (-files +directory):\n%s", diff)
	}
}

// TestRenderResolvesPeers: render resolves peers from the Nodes and
// NodeFirewallAddressSets among its files, and warns of those that do not
// resolve.
func TestRenderResolvesPeers(t *testing.T) {
	policy := `apiVersion: firewall.nodefw.io/v1alpha1
kind: NodeFirewallPolicy
metadata: {name: peers}
spec:
  nodeSelector: {}
  rules:
    - name: api
      chain: Output
      to: [{addressSet: api-vip}, {addressSet: gone}]
      action: Accept
    - name: etcd
      chain: Input
      protocol: TCP
      ports: [{port: 2379}]
      from: [{nodeSelector: {matchLabels: {node-role.kubernetes.io/control-plane: ""}}, except: [192.168.0.10]}]
      action: Accept
`
	code, out, stderr := runCLI(t, policy, "render", "-f", "-", "-f", "testdata/cluster.yaml", "--node-name", "cp-1")
	if code != 0 {
		t.Fatalf("exit code %d\n%s", code, stderr)
	}
	for _, want := range []string{
		"# node cp-1 node-role.kubernetes.io/control-plane=: policies peers",
		"\tset peer-v4-api-vip {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = {\n\t\t\t192.168.0.100\n\t\t}\n\t}\n",
		"ip daddr @peer-v4-api-vip counter accept",
		"ip6 daddr @peer-v6-gone counter accept",
		"ip6 saddr @peer-v6-nodefw-nodes-",
		"ip saddr != 192.168.0.10 meta l4proto tcp th dport 2379 counter accept",
		"\t\t\tfd00::10\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("render lacks %q:\n%s", want, out)
		}
	}
	if want := "warning: policy peers: rule api to[1]: NodeFirewallAddressSet gone not found\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
}
