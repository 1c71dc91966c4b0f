package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/resolve"
	"github.com/nodefw/nodefw/internal/status"
)

// statusFixtures returns policies and node firewalls in every state the
// table shows, their statuses computed as the controller and agents do.
func statusFixtures() ([]fwv1.NodeFirewallPolicy, []fwv1.NodeFirewall) {
	nfw := func(name string, gen int64, policies ...fwv1.PolicyReference) *fwv1.NodeFirewall {
		return &fwv1.NodeFirewall{
			ObjectMeta: metav1.ObjectMeta{Name: name, Generation: gen},
			Spec: fwv1.NodeFirewallSpec{
				DefaultActions: fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop, Forward: fwv1.ChainPolicyAccept, Output: fwv1.ChainPolicyAccept},
				Policies:       policies,
			},
		}
	}
	refs := []fwv1.PolicyReference{{Name: "worker", Generation: 3}, {Name: "audit-egress", Generation: 1}}
	w1 := nfw("worker-1", 5, refs...)
	w1.Spec.DefaultActions.PreRouting = fwv1.ChainPolicyDrop
	w1.Status = status.NodeApplied(w1, nil, 12, metav1.NewTime(time.Now().Add(-90*time.Second)))
	w2 := nfw("worker-2", 4, refs...)
	w2.Status = status.NodeFailed(w2, fwv1.ReasonApplyFailed, errors.New("netlink: operation not permitted"))
	w3 := nfw("worker-3", 2, refs...) // no agent report yet
	nfws := map[string]*fwv1.NodeFirewall{"worker-1": w1, "worker-2": w2, "worker-3": w3}

	policy := func(name string, gen int64, prio int32, mode fwv1.PolicyMode, rules int) fwv1.NodeFirewallPolicy {
		p := fwv1.NodeFirewallPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: name, Generation: gen},
			Spec:       fwv1.NodeFirewallPolicySpec{Priority: &prio, Mode: mode},
		}
		for i := 0; i < rules; i++ {
			p.Spec.Rules = append(p.Spec.Rules, fwv1.Rule{Name: "r" + string(rune('a'+i)), Chain: fwv1.ChainInput, Action: fwv1.ActionAccept})
		}
		return p
	}
	// worker's default Drop overrides audit-egress's Accept on worker-1.
	conflict := resolve.Resolve(resolve.Input{
		Policies: []fwv1.NodeFirewallPolicy{
			{ObjectMeta: metav1.ObjectMeta{Name: "worker"}, Spec: fwv1.NodeFirewallPolicySpec{DefaultActions: &fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "audit-egress"}, Spec: fwv1.NodeFirewallPolicySpec{DefaultActions: &fwv1.DefaultActions{Input: fwv1.ChainPolicyAccept}}},
		},
		Nodes: []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}},
	}).Problems
	problems := map[string][]resolve.Problem{}
	for _, pr := range conflict {
		problems[pr.Policy] = append(problems[pr.Policy], pr)
	}
	worker := policy("worker", 3, 100, fwv1.PolicyModeEnforce, 5)
	worker.Status = status.Policy(&worker, []string{"worker-1", "worker-2", "worker-3"}, nfws, problems["worker"])
	audit := policy("audit-egress", 1, 200, fwv1.PolicyModeAudit, 2)
	audit.Status = status.Policy(&audit, []string{"worker-1"}, nfws, problems["audit-egress"])
	gpu := policy("gpu", 1, 1000, fwv1.PolicyModeEnforce, 1)
	gpu.Status = status.Policy(&gpu, nil, nfws, nil)
	edited := policy("edited", 2, 1000, fwv1.PolicyModeEnforce, 3)
	edited.Generation = 1
	edited.Status = status.Policy(&edited, []string{"worker-1"}, nfws, nil)
	edited.Generation = 2 // spec changed since the last roll-up
	fresh := policy("fresh", 1, 1000, fwv1.PolicyModeEnforce, 1)

	// Unsorted, as a List may return them.
	return []fwv1.NodeFirewallPolicy{worker, gpu, fresh, audit, edited},
		[]fwv1.NodeFirewall{*w3, *w1, *w2}
}

func TestWriteStatus(t *testing.T) {
	policies, nfws := statusFixtures()
	var buf bytes.Buffer
	writeStatus(&buf, policies, nfws)
	out := buf.String()

	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	// Three tables, each after a blank line: policies, warnings, nodes.
	var sections [][]string
	rows := map[string][]string{}
	var order []string
	for i, l := range lines {
		f := strings.Fields(l)
		if i == 0 || len(f) == 0 {
			sections = append(sections, nil)
		}
		if len(f) == 0 {
			continue
		}
		sections[len(sections)-1] = append(sections[len(sections)-1], l)
		if len(sections) != 2 {
			rows[f[0]] = f
			order = append(order, f[0])
		}
	}

	wantOrder := []string{"POLICY", "audit-egress", "edited", "fresh", "gpu", "worker", "NODE", "worker-1", "worker-2", "worker-3"}
	if strings.Join(order, " ") != strings.Join(wantOrder, " ") {
		t.Errorf("rows %v, want %v\n%s", order, wantOrder, out)
	}
	// Warnings that leave a policy Ready: a default-action conflict,
	// reported to both policies, each naming the other.
	wantWarnings := []string{
		"WARNING POLICY MESSAGE",
		`DefaultActionConflict audit-egress spec.defaultActions.input=Accept is overridden by policy "worker", which sets Drop: the more restrictive default wins, on 1 node(s): worker-1`,
		`DefaultActionConflict worker spec.defaultActions.input=Drop overrides policy "audit-egress", which sets Accept: the more restrictive default wins, on 1 node(s): worker-1`,
	}
	if len(sections) != 3 {
		t.Fatalf("want three tables, got %d:\n%s", len(sections), out)
	}
	var gotWarnings []string
	for _, l := range sections[1] {
		gotWarnings = append(gotWarnings, strings.Join(strings.Fields(l), " "))
	}
	if diff := cmp.Diff(wantWarnings, gotWarnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	if h := strings.Join(rows["POLICY"], " "); h != "POLICY PRIORITY MODE RULES MATCHED APPLIED FAILED READY MESSAGE" {
		t.Errorf("policy header %q", h)
	}
	if h := strings.Join(rows["NODE"], " "); h != "NODE POLICIES RULES PREROUTING INPUT FORWARD OUTPUT READY LAST APPLIED MESSAGE" {
		t.Errorf("node header %q", h)
	}

	// name priority mode rules matched applied failed ready, then the message.
	wantPolicies := map[string]string{
		"worker":       "worker 100 Enforce 5 3 1 1 False ApplyFailed: 1 of 3 matched nodes failed to apply: worker-2",
		"audit-egress": "audit-egress 200 Audit 2 1 1 0 True Applied: applied on all 1 matched nodes",
		"gpu":          "gpu 1000 Enforce 1 0 0 0 True NoMatchingNodes: spec.nodeSelector matches no node",
		"edited":       "edited 1000 Enforce 3 1 0 0 Stale applied on 0 of 1 matched nodes",
		"fresh":        "fresh 1000 Enforce 1 0 0 0 Unknown no status yet",
	}
	for name, want := range wantPolicies {
		if got := strings.Join(rows[name], " "); got != want {
			t.Errorf("policy row:\n got %q\nwant %q", got, want)
		}
	}

	// name policies rules prerouting input forward output ready, then last applied
	// and the message.
	wantNodes := map[string]*regexp.Regexp{
		"worker-1": regexp.MustCompile(`^worker-1 2 12 Drop Drop Accept Accept True 1m(29|30|31)s ago Applied: 12 rules programmed$`),
		"worker-2": regexp.MustCompile(`^worker-2 2 0 Accept Drop Accept Accept False - ApplyFailed: keeping the previous ruleset: netlink: operation not permitted$`),
		"worker-3": regexp.MustCompile(`^worker-3 2 0 Accept Drop Accept Accept Unknown - no status yet$`),
	}
	for name, want := range wantNodes {
		if got := strings.Join(rows[name], " "); !want.MatchString(got) {
			t.Errorf("node row:\n got %q\nwant %s", got, want)
		}
	}

	// Columns line up: every cell of a row starts where its header does.
	header := lines[0]
	col := strings.Index(header, "READY")
	for _, l := range lines[1:6] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("READY column not aligned at %d:\n%s\n%s", col, header, l)
		}
	}
}

func TestWriteStatusEmpty(t *testing.T) {
	var buf bytes.Buffer
	writeStatus(&buf, nil, nil)
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "POLICY") || lines[1] != "" || !strings.HasPrefix(lines[2], "NODE") {
		t.Errorf("want the two headers only:\n%s", buf.String())
	}
}

func TestStatusUnreachableCluster(t *testing.T) {
	// A kubeconfig whose API server refuses connections: status fails
	// with exit code 1 and says why, instead of printing an empty table.
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	const cfg = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: t}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// runStatus sets $KUBECONFIG from --kubeconfig; restore it afterwards.
	t.Setenv("KUBECONFIG", "")
	code, out, stderr := runCLI(t, "", "status", "--kubeconfig", kubeconfig)
	if code != 1 || !strings.Contains(stderr, "127.0.0.1:1") {
		t.Errorf("exit code %d, stderr %q: want 1 and the server named", code, stderr)
	}
	if out != "" {
		t.Errorf("stdout %q, want nothing", out)
	}
}
