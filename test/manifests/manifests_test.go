package manifests

import (
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

func TestDefaultHasEveryObject(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	want := []objKey{
		{"Namespace", "", managerNamespace},
		{"Namespace", "", agentNamespace},
		{"CustomResourceDefinition", "", "nodefirewalladdresssets.firewall.nodefw.io"},
		{"CustomResourceDefinition", "", "nodefirewallconfigs.firewall.nodefw.io"},
		{"CustomResourceDefinition", "", "nodefirewallpolicies.firewall.nodefw.io"},
		{"CustomResourceDefinition", "", "nodefirewalls.firewall.nodefw.io"},
		{"ServiceAccount", managerNamespace, managerName},
		{"ClusterRole", "", managerRole},
		{"ClusterRoleBinding", "", "nodefw-manager-rolebinding"},
		{"Role", managerNamespace, "nodefw-leader-election-role"},
		{"RoleBinding", managerNamespace, "nodefw-leader-election-rolebinding"},
		{"Role", managerNamespace, "nodefw-revisions-role"},
		{"RoleBinding", managerNamespace, "nodefw-revisions-rolebinding"},
		{"ClusterRole", "", metricsAuthRole},
		{"ClusterRoleBinding", "", "nodefw-metrics-auth-rolebinding"},
		{"ClusterRole", "", "nodefw-metrics-reader"},
		{"Deployment", managerNamespace, managerName},
		{"Service", managerNamespace, metricsService},
		{"ServiceAccount", agentNamespace, agentName},
		{"ClusterRole", "", agentRole},
		{"ClusterRoleBinding", "", "nodefw-agent-rolebinding"},
		{"Role", managerNamespace, "nodefw-agent-revisions-role"},
		{"RoleBinding", managerNamespace, "nodefw-agent-revisions-rolebinding"},
		{"DaemonSet", agentNamespace, agentName},
		{"ValidatingAdmissionPolicy", "", admissionPolicy},
		{"ValidatingAdmissionPolicyBinding", "", admissionPolicy},
		{"ValidatingAdmissionPolicy", "", failsafeWarning},
		{"ValidatingAdmissionPolicyBinding", "", failsafeWarning},
		{"NodeFirewallConfig", "", fwv1.NodeFirewallConfigName},
	}
	for _, k := range want {
		objs.get(t, k.Kind, k.Namespace, k.Name)
	}
	if len(objs) != len(want) {
		t.Errorf("config/default renders %d objects, want %d: %v", len(objs), len(want), objs.keys())
	}
	// Every namespaced object lives in one of the two namespaces.
	for k := range objs {
		if k.Namespace != "" && k.Namespace != managerNamespace && k.Namespace != agentNamespace {
			t.Errorf("%s is outside nodefw's namespaces", k)
		}
	}
}

func TestDefaultCRDsAreTheGeneratedOnes(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	for k, crd := range readCRDs(t) {
		got := objs.get(t, k.Kind, k.Namespace, k.Name)
		if d := diff(crd.Object, got.Object); d != "" {
			t.Errorf("%s differs from config/crd/bases (-bases +built):\n%s", k, d)
		}
	}
}

func TestNamespacesPodSecurity(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	for ns, level := range map[string]string{managerNamespace: "restricted", agentNamespace: "privileged"} {
		labels := objs.get(t, "Namespace", "", ns).GetLabels()
		if got := labels["pod-security.kubernetes.io/enforce"]; got != level {
			t.Errorf("namespace %s enforces Pod Security level %q, want %q", ns, got, level)
		}
	}
}

func TestImages(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	dep := into[appsv1.Deployment](t, objs.get(t, "Deployment", managerNamespace, managerName))
	ds := into[appsv1.DaemonSet](t, objs.get(t, "DaemonSet", agentNamespace, agentName))
	for _, c := range []struct {
		what, want string
		spec       corev1.PodSpec
	}{
		{"manager", managerImage, dep.Spec.Template.Spec},
		{"agent", agentImage, ds.Spec.Template.Spec},
	} {
		if len(c.spec.Containers) != 1 || len(c.spec.InitContainers) != 0 {
			t.Fatalf("%s: want exactly one container", c.what)
		}
		if got := c.spec.Containers[0].Image; got != c.want {
			t.Errorf("%s image is %q, want %q", c.what, got, c.want)
		}
	}
}

func TestManagerDeployment(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	dep := into[appsv1.Deployment](t, objs.get(t, "Deployment", managerNamespace, managerName))
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]

	for _, arg := range []string{"--leader-elect", "--metrics-bind-address=:8443", "--health-probe-bind-address=:8081"} {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("manager args %v lack %s", c.Args, arg)
		}
	}
	// Metrics are served with authentication and authorization: the
	// flag's default, which nothing may turn off.
	for _, arg := range c.Args {
		if strings.HasPrefix(arg, "--metrics-secure") {
			t.Errorf("manager args set %s; the metrics endpoint must stay secure", arg)
		}
	}
	if pod.ServiceAccountName != managerName {
		t.Errorf("manager runs as service account %q, want %q", pod.ServiceAccountName, managerName)
	}
	if !labelsMatch(dep.Spec.Selector.MatchLabels, dep.Spec.Template.Labels) {
		t.Errorf("selector %v does not select the pod labels %v", dep.Spec.Selector.MatchLabels, dep.Spec.Template.Labels)
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port != intstr.FromString("health") {
			t.Errorf("manager probes must GET the health port: %+v", p)
		}
	}
	if !hasPort(c.Ports, "health", 8081) || !hasPort(c.Ports, "https-metrics", 8443) {
		t.Errorf("manager ports %+v: want health 8081 and https-metrics 8443", c.Ports)
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("manager must request and limit memory: %+v", c.Resources)
	}

	// The restricted Pod Security Standard, which its namespace enforces.
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("manager pod securityContext %+v: want runAsNonRoot and seccomp RuntimeDefault", psc)
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("manager container has no securityContext")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("manager must set allowPrivilegeEscalation: false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("manager must set readOnlyRootFilesystem: true")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("manager capabilities %+v: want drop ALL, add nothing", sc.Capabilities)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("manager must not be privileged")
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		t.Error("manager must not run as root")
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Error("manager must not share host namespaces")
	}
}

func TestMetricsServiceAndAuth(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	svc := into[corev1.Service](t, objs.get(t, "Service", managerNamespace, metricsService))
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8443 || svc.Spec.Ports[0].Name != "https" ||
		svc.Spec.Ports[0].TargetPort != intstr.FromInt32(8443) {
		t.Errorf("metrics Service ports %+v: want https 8443 -> 8443", svc.Spec.Ports)
	}
	dep := into[appsv1.Deployment](t, objs.get(t, "Deployment", managerNamespace, managerName))
	if len(svc.Spec.Selector) == 0 || !labelsMatch(svc.Spec.Selector, dep.Spec.Template.Labels) {
		t.Errorf("metrics Service selector %v does not select the manager's pods %v", svc.Spec.Selector, dep.Spec.Template.Labels)
	}

	// The endpoint can check its callers: TokenReviews and
	// SubjectAccessReviews, granted to the manager's service account.
	perms := permissions(t, objs.get(t, "ClusterRole", "", metricsAuthRole))
	for _, r := range []rule{
		{"authentication.k8s.io", "tokenreviews", "create"},
		{"authorization.k8s.io", "subjectaccessreviews", "create"},
	} {
		if !perms[r] {
			t.Errorf("%s lacks %s", metricsAuthRole, r)
		}
	}
	crb := into[rbacv1.ClusterRoleBinding](t, objs.get(t, "ClusterRoleBinding", "", "nodefw-metrics-auth-rolebinding"))
	checkBinding(t, crb.Name, crb.RoleRef, crb.Subjects, "ClusterRole", metricsAuthRole, managerNamespace, managerName)
	reader := permissions(t, objs.get(t, "ClusterRole", "", "nodefw-metrics-reader"))
	if !reader[rule{"url:", "/metrics", "get"}] || len(reader) != 1 {
		t.Errorf("nodefw-metrics-reader grants %v, want only GET /metrics", sortedRules(reader))
	}
}

func TestManagerRBAC(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	perms := permissions(t, objs.get(t, "ClusterRole", "", managerRole))
	for r := range perms {
		if r.Group == "*" || r.Resource == "*" || r.Verb == "*" {
			t.Errorf("%s grants the wildcard %s", managerRole, r)
		}
		// The controller reads policies and writes only their status.
		if r.Group == fwGroup && r.Resource == "nodefirewallpolicies" && !slices.Contains([]string{"get", "list", "watch"}, r.Verb) {
			t.Errorf("%s grants %s: the controller must not write a policy's spec", managerRole, r)
		}
		if r.Group == "" && r.Resource == "nodes" && !slices.Contains([]string{"get", "list", "watch"}, r.Verb) {
			t.Errorf("%s grants %s: the controller only reads Nodes", managerRole, r)
		}
		if r.Group == "" && r.Resource == "secrets" {
			t.Errorf("%s grants %s: the controller reads no secrets", managerRole, r)
		}
	}
	for _, r := range []rule{
		{fwGroup, "nodefirewallpolicies", "watch"},
		{fwGroup, "nodefirewallpolicies/status", "update"},
		{fwGroup, "nodefirewalls", "create"},
		{"", "nodes", "watch"},
	} {
		if !perms[r] {
			t.Errorf("%s lacks %s", managerRole, r)
		}
	}
	crb := into[rbacv1.ClusterRoleBinding](t, objs.get(t, "ClusterRoleBinding", "", "nodefw-manager-rolebinding"))
	checkBinding(t, crb.Name, crb.RoleRef, crb.Subjects, "ClusterRole", managerRole, managerNamespace, managerName)
	rb := into[rbacv1.RoleBinding](t, objs.get(t, "RoleBinding", managerNamespace, "nodefw-leader-election-rolebinding"))
	checkBinding(t, rb.Name, rb.RoleRef, rb.Subjects, "Role", "nodefw-leader-election-role", managerNamespace, managerName)
	if !permissions(t, objs.get(t, "Role", managerNamespace, "nodefw-leader-election-role"))[rule{"coordination.k8s.io", "leases", "update"}] {
		t.Error("the leader election Role cannot update Leases")
	}
	// The policies' revisions, in the controller's namespace only; never
	// updated, their metadata patched (the current label).
	revs := permissions(t, objs.get(t, "Role", managerNamespace, "nodefw-revisions-role"))
	want := map[rule]bool{}
	for _, v := range []string{"create", "delete", "get", "list", "patch"} {
		want[rule{"apps", "controllerrevisions", v}] = true
	}
	if d := diff(sortedRules(want), sortedRules(revs)); d != "" {
		t.Errorf("the controller's revisions Role (-want +got):\n%s", d)
	}
	rb = into[rbacv1.RoleBinding](t, objs.get(t, "RoleBinding", managerNamespace, "nodefw-revisions-rolebinding"))
	checkBinding(t, rb.Name, rb.RoleRef, rb.Subjects, "Role", "nodefw-revisions-role", managerNamespace, managerName)
	for r := range perms {
		if r.Resource == "controllerrevisions" {
			t.Errorf("%s grants %s in every namespace", managerRole, r)
		}
	}
}

func TestAgentRBAC(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	perms := permissions(t, objs.get(t, "ClusterRole", "", agentRole))
	want := map[rule]bool{}
	for _, v := range []string{"get", "list", "watch", "patch"} {
		want[rule{fwGroup, "nodefirewalls", v}] = true
	}
	for _, v := range []string{"get", "update", "patch"} {
		want[rule{fwGroup, "nodefirewalls/status", v}] = true
	}
	want[rule{fwGroup, "nodefirewalls/finalizers", "update"}] = true
	// The cluster-wide settings, read only.
	for _, v := range []string{"get", "list", "watch"} {
		want[rule{fwGroup, "nodefirewallconfigs", v}] = true
	}
	// The metrics endpoint checks its callers through the API server.
	want[rule{"authentication.k8s.io", "tokenreviews", "create"}] = true
	want[rule{"authorization.k8s.io", "subjectaccessreviews", "create"}] = true
	want[rule{"events.k8s.io", "events", "create"}] = true
	want[rule{"events.k8s.io", "events", "patch"}] = true
	if d := diff(sortedRules(want), sortedRules(perms)); d != "" {
		t.Errorf("%s grants other than exactly its own node's needs (-want +got):\n%s", agentRole, d)
	}
	for r := range perms {
		// The address sets' contents come from their shards (below).
		if r.Resource == "secrets" || r.Resource == "nodes" || strings.HasPrefix(r.Resource, "nodefirewallpolicies") ||
			strings.HasPrefix(r.Resource, "nodefirewalladdresssets") || r.Resource == "*" {
			t.Errorf("%s grants %s", agentRole, r)
		}
	}
	crb := into[rbacv1.ClusterRoleBinding](t, objs.get(t, "ClusterRoleBinding", "", "nodefw-agent-rolebinding"))
	checkBinding(t, crb.Name, crb.RoleRef, crb.Subjects, "ClusterRole", agentRole, agentNamespace, agentName)

	// The policies' revisions, by name, and the address sets' shards,
	// watched: in the controller's namespace only.
	revs := permissions(t, objs.get(t, "Role", managerNamespace, "nodefw-agent-revisions-role"))
	want = map[rule]bool{}
	for _, v := range []string{"get", "list", "watch"} {
		want[rule{"apps", "controllerrevisions", v}] = true
	}
	if d := diff(sortedRules(want), sortedRules(revs)); d != "" {
		t.Errorf("the agent's revisions Role (-want +got):\n%s", d)
	}
	rb := into[rbacv1.RoleBinding](t, objs.get(t, "RoleBinding", managerNamespace, "nodefw-agent-revisions-rolebinding"))
	checkBinding(t, rb.Name, rb.RoleRef, rb.Subjects, "Role", "nodefw-agent-revisions-role", agentNamespace, agentName)
}

func TestAgentDaemonSet(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	ds := into[appsv1.DaemonSet](t, objs.get(t, "DaemonSet", agentNamespace, agentName))
	pod := ds.Spec.Template.Spec
	c := pod.Containers[0]

	if !pod.HostNetwork {
		t.Error("the agent must use the host's network namespace (hostNetwork)")
	}
	if pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("dnsPolicy is %q, want ClusterFirstWithHostNet", pod.DNSPolicy)
	}
	if pod.HostPID || pod.HostIPC {
		t.Error("the agent needs neither hostPID nor hostIPC")
	}
	if len(pod.Volumes) != 0 {
		t.Errorf("the agent mounts %d volumes; it needs no host path", len(pod.Volumes))
	}
	if pod.ServiceAccountName != agentName {
		t.Errorf("agent runs as service account %q, want %q", pod.ServiceAccountName, agentName)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName is %q, want system-node-critical", pod.PriorityClassName)
	}
	if !slices.ContainsFunc(pod.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == ""
	}) {
		t.Errorf("tolerations %+v: want one that tolerates every taint (operator Exists, no key or effect)", pod.Tolerations)
	}
	if pod.TerminationGracePeriodSeconds == nil {
		t.Error("terminationGracePeriodSeconds is not set")
	}
	if !labelsMatch(ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels) {
		t.Errorf("selector %v does not select the pod labels %v", ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels)
	}
	us := ds.Spec.UpdateStrategy
	if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil ||
		us.RollingUpdate.MaxUnavailable == nil || *us.RollingUpdate.MaxUnavailable != intstr.FromInt32(1) {
		t.Errorf("updateStrategy %+v: want RollingUpdate with maxUnavailable 1", us)
	}
	// Fail-static: nothing removes the rules when the agent stops.
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		t.Error("the agent must keep its rules when it stops: no preStop hook")
	}
	for _, arg := range c.Args {
		if strings.HasPrefix(arg, "--cleanup") {
			t.Errorf("the agent runs with %s", arg)
		}
		// The cluster-wide settings are the NodeFirewallConfig's alone.
		for _, flag := range []string{"--failsafe-", "--resync-period", "--confirm-", "--set-lookups"} {
			if strings.HasPrefix(arg, flag) {
				t.Errorf("the agent runs with %s: that setting belongs in the NodeFirewallConfig", arg)
			}
		}
	}

	// NODE_NAME from the pod's node.
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "NODE_NAME" })
	if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.FieldRef == nil || c.Env[i].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("env %+v: want NODE_NAME from spec.nodeName", c.Env)
	}

	// Metrics on 9861 over HTTPS, callers authenticated and authorized:
	// the binary's default, which no flag turns off.
	if !hasPort(c.Ports, "https-metrics", 9861) || !slices.Contains(c.Args, "--metrics-bind-address=:9861") {
		t.Errorf("agent metrics: ports %+v, args %v: want https-metrics on 9861", c.Ports, c.Args)
	}
	if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--metrics-secure") }) {
		t.Errorf("agent args %v: metrics must stay secure (the default)", c.Args)
	}

	// Probes on the health port, 9862.
	if !hasPort(c.Ports, "health", 9862) || !slices.Contains(c.Args, "--health-probe-bind-address=:9862") {
		t.Errorf("agent health port: ports %+v, args %v: want health on 9862", c.Ports, c.Args)
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port != intstr.FromString("health") {
			t.Errorf("agent probes must GET the health port: %+v", p)
		}
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("agent must request and limit memory: %+v", c.Resources)
	}

	// The security context, exactly: not privileged, NET_ADMIN only.
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("agent container has no securityContext")
	}
	if sc.Privileged == nil || *sc.Privileged {
		t.Error("agent must set privileged: false")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN"}) {
		t.Errorf("agent capabilities %+v: want drop [ALL], add [NET_ADMIN]", sc.Capabilities)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("agent must set allowPrivilegeEscalation: false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("agent must set readOnlyRootFilesystem: true")
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("agent seccompProfile %+v: want RuntimeDefault", sc.SeccompProfile)
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("agent must run as uid 0: its NET_ADMIN capability is effective only for root")
	}
	if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
		t.Errorf("agent procMount %q", *sc.ProcMount)
	}
	if psc := pod.SecurityContext; psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("agent pod securityContext %+v: want seccomp RuntimeDefault", psc)
	}
}

func TestAdmissionPolicyStatic(t *testing.T) {
	objs := buildKustomize(t, "config/default")
	vap := into[admissionv1.ValidatingAdmissionPolicy](t, objs.get(t, "ValidatingAdmissionPolicy", "", admissionPolicy))
	vapb := into[admissionv1.ValidatingAdmissionPolicyBinding](t, objs.get(t, "ValidatingAdmissionPolicyBinding", "", admissionPolicy))

	if vapb.Spec.PolicyName != vap.Name {
		t.Errorf("binding names policy %q, want %q", vapb.Spec.PolicyName, vap.Name)
	}
	if !slices.Equal(vapb.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Errorf("binding validationActions %v, want [Deny]", vapb.Spec.ValidationActions)
	}
	if vapb.Spec.ParamRef != nil || vap.Spec.ParamKind != nil {
		t.Error("the policy takes no parameters")
	}
	if vap.Spec.FailurePolicy == nil || *vap.Spec.FailurePolicy != admissionv1.Fail {
		t.Error("the policy must fail closed (failurePolicy Fail)")
	}
	mc := vap.Spec.MatchConstraints
	if mc == nil || len(mc.ResourceRules) != 1 {
		t.Fatalf("matchConstraints %+v: want one resource rule", mc)
	}
	rr := mc.ResourceRules[0]
	if !slices.Equal(rr.APIGroups, []string{fwGroup}) ||
		!slices.Equal(rr.Resources, []string{"nodefirewalls", "nodefirewalls/status"}) ||
		!slices.Equal(rr.Operations, []admissionv1.OperationType{admissionv1.Create, admissionv1.Update, admissionv1.Delete}) {
		t.Errorf("resource rule %+v: want CREATE, UPDATE, DELETE of nodefirewalls and nodefirewalls/status", rr)
	}

	// The matchCondition names the agent's service account as deployed:
	// after config/default's name prefix.
	ds := into[appsv1.DaemonSet](t, objs.get(t, "DaemonSet", agentNamespace, agentName))
	user := "system:serviceaccount:" + ds.Namespace + ":" + ds.Spec.Template.Spec.ServiceAccountName
	if user != agentUser {
		t.Fatalf("the agent runs as %s, want %s", user, agentUser)
	}
	if len(vap.Spec.MatchConditions) != 1 || !strings.Contains(vap.Spec.MatchConditions[0].Expression, "'"+user+"'") {
		t.Errorf("matchConditions %+v: want one naming %s", vap.Spec.MatchConditions, user)
	}
	exprs := ""
	for _, v := range vap.Spec.Variables {
		exprs += v.Expression + "\n"
	}
	if !strings.Contains(exprs, "authentication.kubernetes.io/node-name") {
		t.Error("the policy must take the node from the token's authentication.kubernetes.io/node-name")
	}
}

func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

func hasPort(ports []corev1.ContainerPort, name string, port int32) bool {
	return slices.ContainsFunc(ports, func(p corev1.ContainerPort) bool { return p.Name == name && p.ContainerPort == port })
}

func checkBinding(t *testing.T, name string, ref rbacv1.RoleRef, subjects []rbacv1.Subject, kind, role, ns, sa string) {
	t.Helper()
	if ref.Kind != kind || ref.Name != role || ref.APIGroup != rbacv1.GroupName {
		t.Errorf("%s binds %s %s, want %s %s", name, ref.Kind, ref.Name, kind, role)
	}
	want := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}}
	if d := diff(want, subjects); d != "" {
		t.Errorf("%s subjects (-want +got):\n%s", name, d)
	}
}
