package manifests

import (
	"context"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
)

const nodeNameExtra = "authentication.kubernetes.io/node-name"

// TestAgentAdmissionPolicy creates config/default's objects in a real API
// server, then acts as the agent of node-a against the admission policy.
func TestAgentAdmissionPolicy(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	cfg := startAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	admin, warned := adminClient(t, cfg)

	// The whole install, as deployed: namespaces first. envtest installed
	// the CRDs from config/crd/bases, which config/default holds unchanged.
	// The API server validates every object, and Pod Security admission
	// warns of a pod template its namespace's level would refuse: there
	// must be no warning at all.
	keys := objs.keys()
	sort.SliceStable(keys, func(i, j int) bool { return keys[i].Kind == "Namespace" && keys[j].Kind != "Namespace" })
	for _, k := range keys {
		if k.Kind == "CustomResourceDefinition" {
			continue
		}
		if err := admin.Create(ctx, objs[k].DeepCopy()); err != nil {
			t.Fatalf("creating %s: %v", k, err)
		}
		for _, w := range warned.take() {
			t.Errorf("creating %s: warning: %s", k, w)
		}
	}
	// That check sees Pod Security: the manager on the host's network is
	// warned of.
	bad := into[appsv1.Deployment](t, objs.get(t, "Deployment", managerNamespace, managerName))
	bad.Name = "test-host-network"
	bad.Spec.Template.Spec.HostNetwork = true
	if err := admin.Create(ctx, bad, client.DryRunAll); err != nil {
		t.Fatalf("dry-run of a hostNetwork Deployment: %v", err)
	}
	if w := warned.take(); !slices.ContainsFunc(w, func(s string) bool { return strings.Contains(s, "PodSecurity") }) {
		t.Errorf("a hostNetwork Deployment in %s drew no Pod Security warning (warnings: %q)", managerNamespace, w)
	}

	// RBAC to create and delete too, so that what refuses those below is
	// the policy.
	wider := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "test-agent-create-delete"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{fwGroup}, Resources: []string{"nodefirewalls"}, Verbs: []string{"create", "delete"},
		}},
	}
	widerBinding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "test-agent-create-delete"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: wider.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: agentName, Namespace: agentNamespace}},
	}
	for _, o := range []client.Object{wider, widerBinding} {
		if err := admin.Create(ctx, o); err != nil {
			t.Fatalf("creating %s: %v", o.GetName(), err)
		}
	}

	spec := fwv1.NodeFirewallSpec{DefaultActions: fwv1.DefaultActions{
		Input: fwv1.ChainPolicyAccept, Forward: fwv1.ChainPolicyAccept, Output: fwv1.ChainPolicyAccept,
	}}
	for _, name := range []string{"node-a", "node-b"} {
		nfw := &fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
		if err := admin.Create(ctx, nfw); err != nil {
			t.Fatalf("creating NodeFirewall %s: %v", name, err)
		}
	}

	// The agent of node-a, as its pod-bound token authenticates it, and
	// the agent with a token that names no node.
	agentA := impersonate(t, cfg, map[string][]string{nodeNameExtra: {"node-a"}})
	unbound := impersonate(t, cfg, nil)

	// Policies take effect a moment after they are created: wait until
	// the token naming no node is refused.
	deadline := time.Now().Add(time.Minute)
	for {
		err := writeStatus(ctx, unbound, "node-a", 1)
		if isPolicyDenial(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admission policy never took effect; last answer: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Type-check the policy against the CRD's schema as the API server's
	// status controller would (envtest runs no controller manager): the
	// expressions must compile against NodeFirewall's fields. The policy
	// matches every version ('*'), which the checker skips, so it checks a
	// copy naming the served one. The broken copy shows that the check
	// sees NodeFirewall's fields at all.
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	checker := &validating.TypeChecker{
		SchemaResolver: &resolver.ClientDiscoveryResolver{Discovery: dc},
		RestMapper:     admin.RESTMapper(),
	}
	vap := into[admissionv1.ValidatingAdmissionPolicy](t, objs.get(t, "ValidatingAdmissionPolicy", "", admissionPolicy))
	vap.Spec.MatchConstraints.ResourceRules[0].APIVersions = []string{fwv1.GroupVersion.Version}
	for _, w := range checker.Check(vap) {
		t.Errorf("policy type-check warning at %s: %s", w.FieldRef, w.Warning)
	}
	broken := vap.DeepCopy()
	broken.Spec.Validations = []admissionv1.Validation{{Expression: "object.spec.noSuchField == 1"}}
	if len(checker.Check(broken)) == 0 {
		t.Error("the type check does not see NodeFirewall's schema: it passed an unknown field")
	}

	allowed := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: refused: %v", what, err)
		}
	}
	denied := func(what string, err error, reason string) {
		t.Helper()
		switch {
		case err == nil:
			t.Errorf("%s: allowed, want refused by the admission policy", what)
		case !isPolicyDenial(err):
			t.Errorf("%s: refused, but not by the admission policy: %v", what, err)
		case !strings.Contains(err.Error(), reason):
			t.Errorf("%s: refused for another reason than %q: %v", what, reason, err)
		}
	}

	// What the agent does: its own node's status and its finalizer.
	allowed("status of its own NodeFirewall", writeStatus(ctx, agentA, "node-a", 3))
	allowed("adding its finalizer", patch(ctx, agentA, "node-a", `{"metadata":{"finalizers":["`+agentFinalizer+`"]}}`))
	allowed("removing its finalizer", patch(ctx, agentA, "node-a", `{"metadata":{"finalizers":null}}`))

	// What it may not.
	denied("status of another node's NodeFirewall", writeStatus(ctx, agentA, "node-b", 3), "may only write NodeFirewall node-a")
	denied("finalizer on another node's NodeFirewall",
		patch(ctx, agentA, "node-b", `{"metadata":{"finalizers":["`+agentFinalizer+`"]}}`), "may only write NodeFirewall node-a")
	denied("spec of its own NodeFirewall", patch(ctx, agentA, "node-a", `{"spec":{"defaultActions":{"input":"Drop"}}}`), "spec")
	denied("labels of its own NodeFirewall", patch(ctx, agentA, "node-a", `{"metadata":{"labels":{"x":"y"}}}`), "labels")
	denied("another finalizer on its own NodeFirewall",
		patch(ctx, agentA, "node-a", `{"metadata":{"finalizers":["example.com/other"]}}`), "only its own finalizer")
	denied("creating a NodeFirewall", agentA.Create(ctx, &fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: "node-a-2"}}), "CREATE")
	denied("deleting its own NodeFirewall", agentA.Delete(ctx, &fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}), "DELETE")

	// A token that names no node gets nothing.
	denied("status write with a token naming no node", writeStatus(ctx, unbound, "node-a", 4), "names no node")

	// The policy concerns the agent alone: anyone else is left to RBAC.
	allowed("an administrator changing node-b's spec", patch(ctx, admin, "node-b", `{"spec":{"defaultActions":{"input":"Drop"}}}`))
	got := &fwv1.NodeFirewall{}
	if err := admin.Get(ctx, client.ObjectKey{Name: "node-a"}, got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.DefaultActions.Input != fwv1.ChainPolicyAccept || got.Status.RuleCount != 3 {
		t.Errorf("node-a after the agent's attempts: spec %+v, status ruleCount %d; want the spec untouched and ruleCount 3",
			got.Spec.DefaultActions, got.Status.RuleCount)
	}
}

// startAPIServer starts kube-apiserver and etcd with nodefw's CRDs for the
// test, and stops them when it ends.
func startAPIServer(t *testing.T) *rest.Config {
	t.Helper()
	log.SetLogger(logr.Discard())
	return envtesting.StartForTest(t, repoRoot)
}

// adminClient returns a client with the envtest administrator's rights that
// collects the API server's warnings.
func adminClient(t *testing.T, cfg *rest.Config) (client.Client, *warnings) {
	t.Helper()
	warned := &warnings{}
	adminCfg := rest.CopyConfig(cfg)
	adminCfg.WarningHandler = warned
	admin, err := envtesting.NewClient(adminCfg)
	if err != nil {
		t.Fatal(err)
	}
	return admin, warned
}

// warnings collects the API server's warnings.
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

// take returns the warnings so far and forgets them.
func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.list
	w.list = nil
	return list
}

// impersonate returns a client acting as the agent's service account, with
// the given user extras.
func impersonate(t *testing.T, cfg *rest.Config, extra map[string][]string) client.Client {
	t.Helper()
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{
		UserName: agentUser,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + agentNamespace, "system:authenticated"},
		Extra:    extra,
	}
	cl, err := envtesting.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// writeStatus updates the status of a NodeFirewall, as the agent does.
func writeStatus(ctx context.Context, c client.Client, name string, rules int32) error {
	nfw := &fwv1.NodeFirewall{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, nfw); err != nil {
		return err
	}
	nfw.Status.RuleCount = rules
	nfw.Status.ObservedGeneration = nfw.Generation
	return c.Status().Update(ctx, nfw)
}

// patch merge-patches a NodeFirewall.
func patch(ctx context.Context, c client.Client, name, data string) error {
	nfw := &fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: name}}
	return c.Patch(ctx, nfw, client.RawPatch(types.MergePatchType, []byte(data)))
}

// isPolicyDenial reports whether err is nodefw's admission policy refusing
// a request.
func isPolicyDenial(err error) bool {
	return err != nil && (apierrors.IsForbidden(err) || apierrors.IsInvalid(err)) &&
		strings.Contains(err.Error(), admissionPolicy)
}
