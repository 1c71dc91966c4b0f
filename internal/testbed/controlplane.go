// Package testbed runs nodefw for real on one machine: a local control
// plane (kube-apiserver and etcd as processes), the manager and one agent
// per network-namespace "node". The demo uses it directly; the end-to-end
// and fault tests through package suite.
package testbed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
)

// ControlPlane is a local kube-apiserver and etcd with nodefw's CRDs.
type ControlPlane struct {
	env *envtest.Environment
	// Kubeconfig is the path of an admin kubeconfig for kubectl and the
	// nodefw processes.
	Kubeconfig string
	Config     *rest.Config
	Client     client.Client

	apiserverArgs []string
	apiserverPID  int
	// restarted is set once the API server runs as our own process rather
	// than envtest's.
	restarted bool
}

// ManagerNamespace is the controller's namespace, as in a cluster: the
// ControllerRevisions holding the policies' rules live there.
const ManagerNamespace = "nodefw-system"

// StartControlPlane starts etcd and kube-apiserver from KUBEBUILDER_ASSETS,
// installs the CRDs in crdDir and writes an admin kubeconfig into dir.
func StartControlPlane(crdDir, dir string) (*ControlPlane, error) {
	if err := envtesting.CheckAssets(); err != nil {
		return nil, err
	}
	// etcd's data and the API server's certificates live under dir, so
	// that removing dir removes everything, and a process left over from a
	// crashed run can be recognised by its arguments.
	certDir, dataDir := filepath.Join(dir, "apiserver"), filepath.Join(dir, "etcd")
	for _, d := range []string{certDir, dataDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	env := envtesting.Environment(crdDir)
	// A busy machine (a parallel `go test ./...`) can be slow to start
	// kube-apiserver.
	env.ControlPlaneStartTimeout = 2 * time.Minute
	env.ControlPlane.APIServer = &envtest.APIServer{CertDir: certDir}
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: dataDir}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	cp := &ControlPlane{env: env, Config: cfg}
	fail := func(err error) (*ControlPlane, error) {
		_ = env.Stop()
		return nil, err
	}
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "nodefw-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fail(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return fail(err)
	}
	cp.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(cp.Kubeconfig, kc, 0o600); err != nil {
		return fail(err)
	}
	cp.Client, err = envtesting.NewClient(cfg)
	if err != nil {
		return fail(err)
	}
	// The controller's namespace, which holds the policies' revisions.
	ns := &corev1.Namespace{}
	ns.Name = ManagerNamespace
	if err := cp.Client.Create(context.Background(), ns); err != nil {
		return fail(fmt.Errorf("creating namespace %s: %w", ManagerNamespace, err))
	}
	// Remember how the API server was started, so that it can be stopped
	// and started again with the same certificates and port.
	cp.apiserverPID, cp.apiserverArgs, err = findProcess("kube-apiserver", "--cert-dir="+env.ControlPlane.APIServer.CertDir)
	if err != nil {
		return fail(err)
	}
	return cp, nil
}

// APIServerPID is the process ID of the running API server, or 0.
func (cp *ControlPlane) APIServerPID() int { return cp.apiserverPID }

// StopAPIServer kills the API server, as an outage would. etcd keeps running.
func (cp *ControlPlane) StopAPIServer() error {
	if cp.apiserverPID == 0 {
		return nil
	}
	p, err := os.FindProcess(cp.apiserverPID)
	if err != nil {
		return err
	}
	_ = p.Signal(syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for processAlive(cp.apiserverPID) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cp.apiserverPID = 0
	return nil
}

// StartAPIServer starts a stopped API server again with its old arguments
// and waits until it serves.
func (cp *ControlPlane) StartAPIServer(ctx context.Context) error {
	if cp.apiserverPID != 0 {
		return nil
	}
	cmd := exec.Command(cp.apiserverArgs[0], cp.apiserverArgs[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	cp.apiserverPID, cp.restarted = cmd.Process.Pid, true
	go func() { _ = cmd.Wait() }()
	return cp.WaitReady(ctx)
}

// WaitReady waits until the API server answers.
func (cp *ControlPlane) WaitReady(ctx context.Context) error {
	rc, err := rest.RESTClientFor(restConfigForHealth(cp.Config))
	if err != nil {
		return err
	}
	for {
		res := rc.Get().AbsPath("/readyz").Do(ctx)
		if res.Error() == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("API server not ready: %w", res.Error())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func restConfigForHealth(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &fwv1.GroupVersion
	c.NegotiatedSerializer = clientgoscheme.Codecs.WithoutConversion()
	c.Timeout = 2 * time.Second
	return c
}

// Stop stops the API server and etcd and removes their files.
func (cp *ControlPlane) Stop() error {
	if cp.restarted {
		// envtest only knows the first API server process; stop ours.
		_ = cp.StopAPIServer()
	}
	return cp.env.Stop()
}

// findProcess returns the PID and command line of the process whose
// executable base name is name and whose arguments include arg.
func findProcess(name, arg string) (int, []string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) != name {
			continue
		}
		for _, a := range args[1:] {
			if a == arg {
				return pid, args, nil
			}
		}
	}
	return 0, nil, fmt.Errorf("no %s process with %s", name, arg)
}

func processAlive(pid int) bool {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// A zombie has exited but has not been reaped yet.
	fields := strings.Fields(string(raw))
	return len(fields) > 2 && fields[2] != "Z"
}
