package localcluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Users of the components' client certificates. The controller manager,
// the scheduler, kube-proxy and the kubelets are users the API server's
// bootstrap RBAC and Node authorizer know; flannel gets the ClusterRole of
// its upstream manifest.
const (
	userAdmin          = "nodefw-admin"
	userControllerMgr  = "system:kube-controller-manager"
	userScheduler      = "system:kube-scheduler"
	userKubeProxy      = "system:kube-proxy"
	userFlannel        = "flannel"
	groupMasters       = "system:masters"
	groupNodes         = "system:nodes"
	serviceAccountIss  = "https://kubernetes.default.svc.cluster.local"
	kubeconfigDirName  = "kubeconfigs"
	apiServerReadyWait = 2 * time.Minute
)

func kubeconfigPath(name string) string {
	return filepath.Join(StateDir, kubeconfigDirName, name+".kubeconfig")
}

// APIServerURL is the API server's address on the LAN.
func (c *Cluster) APIServerURL() string {
	return fmt.Sprintf("https://%s", net.JoinHostPort(c.ControlPlane.Addr.String(), fmt.Sprint(APIServerPort)))
}

// startControlPlane writes the certificates and kubeconfigs and starts
// etcd, kube-apiserver, kube-controller-manager and kube-scheduler in the
// control-plane node's network namespace.
func (c *Cluster) startControlPlane(ctx context.Context) error {
	cp := c.ControlPlane
	pkiDir := filepath.Join(StateDir, "pki")
	p, err := newPKI(pkiDir)
	if err != nil {
		return err
	}
	c.pki = p
	apiCert, apiKey, err := p.issue("apiserver", certSpec{
		CommonName: "kube-apiserver",
		DNSNames:   []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"},
		IPs:        []net.IP{cp.Addr.AsSlice(), KubernetesServiceIP.AsSlice(), net.IPv4(127, 0, 0, 1)},
		Server:     true,
	})
	if err != nil {
		return err
	}
	// The API server's client certificate for the kubelets (logs, exec).
	kubeletClientCert, kubeletClientKey, err := p.issue("apiserver-kubelet-client", certSpec{
		CommonName: "kube-apiserver-kubelet-client", Organizations: []string{groupMasters}, Client: true,
	})
	if err != nil {
		return err
	}
	saKey, saPub, err := p.serviceAccountKeys()
	if err != nil {
		return err
	}
	server := c.APIServerURL()
	for _, kc := range []struct {
		name, user string
		groups     []string
	}{
		{"admin", userAdmin, []string{groupMasters}},
		{"controller-manager", userControllerMgr, nil},
		{"scheduler", userScheduler, nil},
		{"kube-proxy", userKubeProxy, nil},
		{"flannel", userFlannel, nil},
	} {
		if err := p.kubeconfig(kubeconfigPath(kc.name), server, kc.user, kc.groups...); err != nil {
			return err
		}
	}
	c.Kubeconfig = AdminKubeconfig
	if err := writeKubeconfigCopy(kubeconfigPath("admin"), AdminKubeconfig); err != nil {
		return err
	}

	bin := c.opts.AssetsDir
	c.logf("starting etcd and kube-apiserver in %s", cp.Name)
	if err := startDaemon(cp.Name, "etcd", nil, filepath.Join(bin, "etcd"),
		"--name", "default",
		"--data-dir", filepath.Join(StateDir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379",
		"--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380",
		"--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380",
		"--listen-metrics-urls", "",
		// A test cluster: speed over durability.
		"--unsafe-no-fsync",
	); err != nil {
		return err
	}
	if err := startDaemon(cp.Name, "kube-apiserver", nil, filepath.Join(bin, "kube-apiserver"),
		"--advertise-address", cp.Addr.String(),
		"--bind-address", "0.0.0.0",
		"--secure-port", fmt.Sprint(APIServerPort),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--service-cluster-ip-range", ServiceNetwork.String(),
		"--client-ca-file", p.caPath,
		"--tls-cert-file", apiCert,
		"--tls-private-key-file", apiKey,
		"--kubelet-client-certificate", kubeletClientCert,
		"--kubelet-client-key", kubeletClientKey,
		"--kubelet-certificate-authority", p.caPath,
		"--kubelet-preferred-address-types", "InternalIP",
		"--service-account-issuer", serviceAccountIss,
		"--service-account-key-file", saPub,
		"--service-account-signing-key-file", saKey,
		"--authorization-mode", "Node,RBAC",
		"--enable-admission-plugins", "NodeRestriction",
		"--allow-privileged",
		"--cert-dir", filepath.Join(StateDir, "apiserver"),
		"--profiling=false",
	); err != nil {
		return err
	}

	cfg, err := restConfig(c.Kubeconfig)
	if err != nil {
		return err
	}
	c.Config = cfg
	if err := waitAPIServer(ctx, cfg); err != nil {
		return err
	}
	c.Client, err = client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		return err
	}
	if err := c.grantFlannel(ctx); err != nil {
		return err
	}

	c.logf("starting kube-controller-manager (allocating /24s of %s) and kube-scheduler", PodNetwork)
	cmKubeconfig := kubeconfigPath("controller-manager")
	if err := startDaemon(cp.Name, "kube-controller-manager", nil, filepath.Join(c.opts.BinDir, "kube-controller-manager"),
		"--kubeconfig", cmKubeconfig,
		"--authentication-kubeconfig", cmKubeconfig,
		"--authorization-kubeconfig", cmKubeconfig,
		"--bind-address", "127.0.0.1",
		"--leader-elect=false",
		"--allocate-node-cidrs",
		"--cluster-cidr", PodNetwork.String(),
		"--node-cidr-mask-size", "24",
		"--service-cluster-ip-range", ServiceNetwork.String(),
		"--service-account-private-key-file", saKey,
		"--root-ca-file", p.caPath,
		"--use-service-account-credentials",
	); err != nil {
		return err
	}
	schedKubeconfig := kubeconfigPath("scheduler")
	return startDaemon(cp.Name, "kube-scheduler", nil, filepath.Join(c.opts.BinDir, "kube-scheduler"),
		"--kubeconfig", schedKubeconfig,
		"--authentication-kubeconfig", schedKubeconfig,
		"--authorization-kubeconfig", schedKubeconfig,
		"--bind-address", "127.0.0.1",
		"--leader-elect=false",
	)
}

// waitAPIServer waits until the API server is ready, its bootstrap RBAC
// included.
func waitAPIServer(ctx context.Context, cfg *rest.Config) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, apiServerReadyWait)
	defer cancel()
	var last error
	for {
		last = cs.Discovery().RESTClient().Get().AbsPath("/readyz").Timeout(5 * time.Second).Do(ctx).Error()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready after %s: %w", apiServerReadyWait, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// writeKubeconfigCopy copies a kubeconfig.
func writeKubeconfigCopy(from, to string) error {
	raw, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, raw, 0o600)
}

// grantFlannel gives flanneld's user what flannel's upstream manifest
// gives its service account.
func (c *Cluster) grantFlannel(ctx context.Context) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "flannel"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "flannel"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "flannel"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: userFlannel}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := c.Client.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating flannel's RBAC: %w", err)
		}
	}
	return nil
}
