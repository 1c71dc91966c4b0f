package manifests

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"
)

// The Argo CD health checks shipped in config/argocd: Lua scripts run the
// way Argo CD runs them, against fixture objects, and the argocd-cm patch
// that installs them.

var updateArgoCDPatch = flag.Bool("update", false, "rewrite config/argocd/argocd-cm-patch.yaml from the Lua scripts")

// argocdDir holds the health scripts and the argocd-cm patch.
var argocdDir = filepath.Join(repoRoot, "config", "argocd")

// argoHealth is what a health script returns.
type argoHealth struct {
	Status  string
	Message string
}

// toLua converts a decoded object to Lua values as Argo CD does.
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for k, item := range v {
			t.RawSetH(lua.LString(k), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

// runHealth runs a health script against an object given as YAML, in a
// state set up as Argo CD sets up custom health checks: without the
// standard libraries except base, table and package, and with a deadline.
func runHealth(t *testing.T, script, object string) argoHealth {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(object))
	if err != nil {
		t.Fatal(err)
	}
	// The apimachinery decoder gives int64 for integers, as in the
	// unstructured objects Argo CD hands to the script.
	var obj map[string]any
	if err := json.Unmarshal(j, &obj); err != nil {
		t.Fatal(err)
	}

	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		t.Fatalf("script failed: %v", err)
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("script returned %s, want a table", l.Get(-1).Type())
	}
	var h argoHealth
	ret.ForEach(func(k, v lua.LValue) {
		switch k.String() {
		case "status":
			h.Status = v.String()
		case "message":
			h.Message = v.String()
		default:
			t.Errorf("unexpected key %q in the returned table", k.String())
		}
	})
	switch h.Status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		t.Errorf("status %q is not an Argo CD health status", h.Status)
	}
	return h
}

func readArgoScript(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(argocdDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// healthFixture builds an object of kind with generation 2 and the given status.
func healthFixture(kind, status string) string {
	s := "apiVersion: firewall.nodefw.io/v1alpha1\nkind: " + kind + "\nmetadata:\n  name: fixture\n  generation: 2\n"
	if status != "" {
		s += "status:\n" + status
	}
	return s
}

const (
	condReadyTrue = `  - type: Ready
    status: "True"
    reason: Applied
    message: ""
    lastTransitionTime: "2026-01-01T00:00:00Z"
`
	condStalled = `  - type: Stalled
    status: "True"
    reason: Failed
    message: "nft: Could not process rule: No such file or directory"
    lastTransitionTime: "2026-01-01T00:00:00Z"
  - type: Ready
    status: "False"
    reason: Failed
    message: "nft: Could not process rule: No such file or directory"
    lastTransitionTime: "2026-01-01T00:00:00Z"
`
	condReconciling = `  - type: Reconciling
    status: "True"
    reason: Progressing
    message: Programming generation 2
    lastTransitionTime: "2026-01-01T00:00:00Z"
  - type: Ready
    status: "False"
    reason: Progressing
    message: Programming generation 2
    lastTransitionTime: "2026-01-01T00:00:00Z"
`
)

func TestArgoCDNodeFirewallPolicyHealth(t *testing.T) {
	script := readArgoScript(t, "nodefirewallpolicy-health.lua")
	const kind = "NodeFirewallPolicy"
	counts := "  matchedNodes: 3\n  appliedNodes: 3\n  failedNodes: 0\n"
	tests := []struct {
		name   string
		status string
		want   argoHealth
	}{
		{"no status", "", argoHealth{"Progressing", "Waiting for the controller to report the policy's status"}},
		{"no conditions", "  observedGeneration: 2\n" + counts, argoHealth{"Progressing", "Waiting for the controller to report the policy's status"}},
		{"empty conditions", "  observedGeneration: 2\n  conditions: []\n", argoHealth{"Progressing", "Waiting for the controller to report the policy's status"}},
		{"stale generation", "  observedGeneration: 1\n" + counts + "  conditions:\n" + condReadyTrue,
			argoHealth{"Progressing", "Waiting for the controller to observe generation 2 (observed 1)"}},
		{"reconciling", "  observedGeneration: 2\n  matchedNodes: 3\n  appliedNodes: 1\n  failedNodes: 0\n  conditions:\n" + condReconciling,
			argoHealth{"Progressing", "Programming generation 2"}},
		{"ready", "  observedGeneration: 2\n" + counts + "  conditions:\n" + condReadyTrue,
			argoHealth{"Healthy", "Applied on 3 of 3 nodes"}},
		{"stalled", "  observedGeneration: 2\n  matchedNodes: 3\n  appliedNodes: 2\n  failedNodes: 1\n  conditions:\n" + condStalled,
			argoHealth{"Degraded", "nft: Could not process rule: No such file or directory"}},
		{"ready false failed", "  observedGeneration: 2\n  conditions:\n  - type: Ready\n    status: \"False\"\n    reason: Failed\n    message: 1 of 3 nodes failed\n",
			argoHealth{"Degraded", "1 of 3 nodes failed"}},
		{"ready false other", "  observedGeneration: 2\n  conditions:\n  - type: Ready\n    status: \"False\"\n    reason: NoNodes\n",
			argoHealth{"Progressing", "NoNodes"}},
		{"ready unknown", "  observedGeneration: 2\n  conditions:\n  - type: Ready\n    status: Unknown\n    reason: Failed\n",
			argoHealth{"Progressing", "Failed"}},
		{"no ready", "  observedGeneration: 2\n  conditions:\n  - type: Other\n    status: \"True\"\n",
			argoHealth{"Progressing", "Waiting for the Ready condition"}},
		// As in kstatus, a status without observedGeneration is taken as
		// current.
		{"no observed generation", "  conditions:\n" + condReadyTrue, argoHealth{"Healthy", "Applied"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runHealth(t, script, healthFixture(kind, tc.status))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("health mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestArgoCDNodeFirewallHealth(t *testing.T) {
	script := readArgoScript(t, "nodefirewall-health.lua")
	const kind = "NodeFirewall"
	applied := "  ruleCount: 14\n  lastAppliedTime: \"2026-01-01T00:00:00Z\"\n"
	tests := []struct {
		name   string
		status string
		want   argoHealth
	}{
		{"no status", "", argoHealth{"Progressing", "Waiting for the node agent to report the firewall's status"}},
		{"no conditions", "  observedGeneration: 2\n" + applied, argoHealth{"Progressing", "Waiting for the node agent to report the firewall's status"}},
		{"stale generation", "  observedGeneration: 1\n" + applied + "  conditions:\n" + condReadyTrue,
			argoHealth{"Progressing", "Waiting for the node agent to apply generation 2 (applied 1)"}},
		{"reconciling", "  observedGeneration: 2\n  conditions:\n" + condReconciling,
			argoHealth{"Progressing", "Programming generation 2"}},
		{"ready", "  observedGeneration: 2\n" + applied + "  conditions:\n" + condReadyTrue,
			argoHealth{"Healthy", "14 rules programmed"}},
		{"stalled", "  observedGeneration: 2\n  lastError: nft failed\n  conditions:\n" + condStalled,
			argoHealth{"Degraded", "nft: Could not process rule: No such file or directory"}},
		{"stalled without message", "  observedGeneration: 2\n  lastError: nft failed\n  conditions:\n  - type: Stalled\n    status: \"True\"\n    reason: Failed\n",
			argoHealth{"Degraded", "nft failed"}},
		{"ready false reverted", "  observedGeneration: 2\n  lastError: commit failed, previous ruleset restored\n  conditions:\n  - type: Ready\n    status: \"False\"\n    reason: Reverted\n",
			argoHealth{"Degraded", "commit failed, previous ruleset restored"}},
		{"ready false other", "  observedGeneration: 2\n  conditions:\n  - type: Ready\n    status: \"False\"\n    reason: Pending\n    message: waiting for the agent\n",
			argoHealth{"Progressing", "waiting for the agent"}},
		{"no ready", "  observedGeneration: 2\n  conditions:\n  - type: Other\n    status: \"True\"\n",
			argoHealth{"Progressing", "Waiting for the Ready condition"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runHealth(t, script, healthFixture(kind, tc.status))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("health mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// patchKeys maps the argocd-cm keys to the scripts they hold.
var patchKeys = []struct{ key, file string }{
	{"resource.customizations.health.firewall.nodefw.io_NodeFirewallPolicy", "nodefirewallpolicy-health.lua"},
	{"resource.customizations.health.firewall.nodefw.io_NodeFirewall", "nodefirewall-health.lua"},
}

const patchHeader = `# Installs the nodefw health checks into Argo CD's argocd-cm ConfigMap.
# Generated from the .lua files beside it: after editing one, run
#   go test ./test/manifests/ -run TestArgoCDConfigMapPatch -update
# See README.md for how to apply it.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
data:
`

// renderPatch renders argocd-cm-patch.yaml from the scripts.
func renderPatch(t *testing.T) string {
	var b strings.Builder
	b.WriteString(patchHeader)
	for _, k := range patchKeys {
		b.WriteString("  " + k.key + ": |\n")
		for _, line := range strings.SplitAfter(strings.TrimRight(readArgoScript(t, k.file), "\n")+"\n", "\n") {
			if line == "" {
				continue
			}
			if line == "\n" {
				b.WriteString("\n")
				continue
			}
			b.WriteString("    " + line)
		}
	}
	return b.String()
}

// TestArgoCDConfigMapPatch checks that argocd-cm-patch.yaml holds the scripts
// as they are in the .lua files, under the keys Argo CD reads.
func TestArgoCDConfigMapPatch(t *testing.T) {
	path := filepath.Join(argocdDir, "argocd-cm-patch.yaml")
	want := renderPatch(t)
	if *updateArgoCDPatch {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Fatalf("%s is out of date (-want +got); run with -update:\n%s", path, diff)
	}

	// The YAML must give back each script byte for byte.
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(got, &cm); err != nil {
		t.Fatal(err)
	}
	if len(cm.Data) != len(patchKeys) {
		t.Errorf("data has %d keys, want %d", len(cm.Data), len(patchKeys))
	}
	for _, k := range patchKeys {
		if diff := cmp.Diff(readArgoScript(t, k.file), cm.Data[k.key]); diff != "" {
			t.Errorf("data[%s] differs from %s (-file +patch):\n%s", k.key, k.file, diff)
		}
	}
}
