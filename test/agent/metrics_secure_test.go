package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/testbed"
)

// TestAgentMetricsSecure runs the agent as the manifests do: with its own
// service account bound to the shipped agent ClusterRole and to the
// shipped Role on the controller's namespace (its ControllerRevisions: the
// policies' rules, the address sets' shards), and metrics on
// their default, HTTPS with every scrape authenticated (TokenReview) and
// authorized (SubjectAccessReview) through the API server. A scraper bound
// to the shipped metrics-reader ClusterRole gets the metrics; no token is
// refused with 401, a token without the role with 403, and plain HTTP
// gets nothing.
func TestAgentMetricsSecure(t *testing.T) {
	ctx := context.Background()
	const ns = "metrics-secure"
	if err := cp.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	agentRole := shippedClusterRole(t, "config/agent/rbac/agent_role.yaml", "metrics-secure-agent")
	readerRole := shippedClusterRole(t, "config/rbac/metrics_reader_role.yaml", "metrics-secure-reader")
	tokens := map[string]string{}
	for sa, role := range map[string]string{"agent": agentRole, "prometheus": readerRole, "stranger": ""} {
		tokens[sa] = serviceAccountToken(t, ns, sa, role)
	}
	bindShippedRole(t, "config/agent/rbac/revisions_role.yaml", "metrics-secure-agent-revisions", testbed.ManagerNamespace, ns, "agent")

	pair := netnstest.NewTestPair(t)
	const node = "metrics-secure-node"
	createNFW(t, node, kubeletSpec())
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	kubeconfig := tokenKubeconfig(t, tokens["agent"])
	p, err := testbed.StartProcess(workDir, node, agentBin, "--kubeconfig", kubeconfig, "--node-name", node, "--netns", pair.Host.Path(),
		"--resync-period", "1s", "--metrics-bind-address", addr, "--health-probe-bind-address", "0", "--confirm-timeout", "0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("agent log:\n%s", testbed.LogTail(p, 40))
		}
	})
	// The agent's own service account does its work: it applies.
	waitReady(t, node, metav1.ConditionTrue, "Applied")

	httpsClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		// The agent's certificate is self-signed unless one is provided.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	scrape := func(scheme, token string) (int, string, error) {
		req, err := http.NewRequest(http.MethodGet, scheme+"://"+addr+"/metrics", nil)
		if err != nil {
			return 0, "", err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := httpsClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	envtesting.Eventually(t, 30*time.Second, func() error {
		code, body, err := scrape("https", tokens["prometheus"])
		if err != nil || code != http.StatusOK || !strings.Contains(body, "nodefw_agent_applies_total") {
			return fmt.Errorf("the metrics reader got %d (%v): %.200s", code, err, body)
		}
		return nil
	})
	for _, c := range []struct {
		who, token string
		want       []int
	}{
		{"no token", "", []int{http.StatusUnauthorized}},
		// controller-runtime's filter answers 500 when the API server's
		// TokenReview reports an error for the token, as for this one.
		{"a token that does not authenticate", "not-a-token", []int{http.StatusUnauthorized, http.StatusInternalServerError}},
		{"a service account without the metrics reader role", tokens["stranger"], []int{http.StatusForbidden}},
	} {
		code, body, err := scrape("https", c.token)
		if err != nil || !slices.Contains(c.want, code) {
			t.Errorf("%s: %d (%v), want one of %v", c.who, code, err, c.want)
		}
		if strings.Contains(body, "nodefw_agent_") {
			t.Errorf("%s: got metrics", c.who)
		}
	}
	if code, body, err := scrape("http", tokens["prometheus"]); err == nil && (code == http.StatusOK || strings.Contains(body, "nodefw_agent_")) {
		t.Errorf("plain HTTP got %d with metrics; the secure endpoint must not serve them", code)
	}
}

// shippedClusterRole creates, under another name, a ClusterRole as the
// repository ships it.
func shippedClusterRole(t *testing.T, path, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", path))
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, role); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	role.ObjectMeta = metav1.ObjectMeta{Name: name}
	if err := cp.Client.Create(context.Background(), role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Client.Delete(context.Background(), role) })
	return name
}

// bindShippedRole creates, under another name, the Role the repository
// ships in path (among other documents) in namespace, and binds it to the
// service account saNamespace/sa.
func bindShippedRole(t *testing.T, path, name, namespace, saNamespace, sa string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", path))
	if err != nil {
		t.Fatal(err)
	}
	var role *rbacv1.Role
	for _, doc := range strings.Split(string(data), "\n---\n") {
		r := &rbacv1.Role{}
		if err := yaml.Unmarshal([]byte(doc), r); err == nil && r.Kind == "Role" {
			role = r
		}
	}
	if role == nil {
		t.Fatalf("%s holds no Role", path)
	}
	role.ObjectMeta = metav1.ObjectMeta{Name: name, Namespace: namespace}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: saNamespace, Name: sa}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := cp.Client.Create(context.Background(), obj); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cp.Client.Delete(context.Background(), obj) })
	}
}

// serviceAccountToken creates a service account bound to role (none when
// "") and returns a token for it.
func serviceAccountToken(t *testing.T, ns, name, role string) string {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := cp.Client.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	if role != "" {
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: role + "-" + name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}},
		}
		if err := cp.Client.Create(ctx, binding); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cp.Client.Delete(context.Background(), binding) })
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	if err := cp.Client.SubResource("token").Create(ctx, sa, req); err != nil {
		t.Fatalf("requesting a token for %s/%s: %v", ns, name, err)
	}
	return req.Status.Token
}

// tokenKubeconfig writes a kubeconfig that reaches the control plane with
// a bearer token.
func tokenKubeconfig(t *testing.T, token string) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["cp"] = &clientcmdapi.Cluster{Server: cp.Config.Host, CertificateAuthorityData: cp.Config.CAData}
	kc.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["cp"] = &clientcmdapi.Context{Cluster: "cp", AuthInfo: "sa"}
	kc.CurrentContext = "cp"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}
