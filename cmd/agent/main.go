// Command agent is nodefw's node agent. It runs on every node (a DaemonSet),
// watches only its own node's NodeFirewall, and programs it into one
// nftables table through netlink: each change reaches the packet path in one
// atomic transaction.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"time"

	"golang.org/x/sys/unix"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/agent"
	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/nflog"
	"github.com/nodefw/nodefw/internal/nft"
	"github.com/nodefw/nodefw/internal/reconnect"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

// options are the agent's command-line flags.
type options struct {
	nodeName      string
	table         string
	netnsPath     string
	resync        time.Duration
	inbound       string
	outbound      string
	metricsAddr   string
	probeAddr     string
	secureMetrics bool
	cleanup       bool
	qps           float64
	burst         int
	confirmWait   time.Duration
	confirmAddr   string
	setLookups    bool
	logGroup      uint
	logQueue      int
	revisionNS    string
	zap           zap.Options
}

// gcPercent is the agent's GOGC unless the environment sets one. Its live
// heap is small (about 25 MB at 10,000 rules) and its allocations come in
// bursts several times that size (each sync expands the rules, compiles
// them and reads the kernel's sets back), so the default of 100 would let
// transient garbage double its resident size on every node; at 25 a
// burst costs more collections instead, a few tens of milliseconds of CPU.
const gcPercent = 25

func run() error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	o := parseFlags()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))

	fw, err := nft.New(o.netnsPath, o.table)
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	defer fw.Close()
	if o.cleanup {
		return fw.Delete()
	}
	if o.nodeName == "" {
		return fmt.Errorf("--node-name (or $NODE_NAME) is required")
	}
	compileOpts, err := o.compileOptions()
	if err != nil {
		return err
	}
	// --kubeconfig is registered by controller-runtime; empty means in-cluster.
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(o.qps), o.burst
	// Watches come back within a second of the API server's return.
	reconnect.Wrap(cfg)
	mgr, err := newManager(cfg, o)
	if err != nil {
		return err
	}
	confirm, err := o.confirmer(cfg.Host)
	if err != nil {
		return err
	}
	// The flags stand in for the NodeFirewallConfig while there is none.
	bootstrap := clusterconfig.Settings{
		FailsafeInbound: compileOpts.FailsafeInbound, FailsafeOutbound: compileOpts.FailsafeOutbound,
		ResyncPeriod: o.resync, ConfirmTimeout: o.confirmWait, ConfirmEndpoint: o.confirmAddr, SetLookups: o.setLookups,
	}

	metrics.Registry.MustRegister(agent.NewRuleCounters(fw.Counters))
	logs, err := openLogReader(o)
	if err != nil {
		// The firewall works without its logs: say so and go on.
		ctrl.Log.Error(err, "drop logs are off", "group", o.logGroup)
	}
	current, err := agent.CurrentRevisionsCache(cfg, mgr.GetScheme(), o.revisionNS)
	if err != nil {
		return fmt.Errorf("creating the current revisions' cache: %w", err)
	}
	if err := mgr.Add(current); err != nil {
		return err
	}
	r := &agent.Reconciler{
		Client:       mgr.GetClient(),
		Recorder:     mgr.GetEventRecorder("nodefw-agent"),
		Firewall:     fw,
		Metrics:      agent.NewMetrics(metrics.Registry),
		NodeName:     o.nodeName,
		Compile:      compileOpts,
		ResyncPeriod: o.resync,

		Confirm:        confirm,
		ConfirmTimeout: o.confirmWait,

		Config: clusterconfig.NewTracker(bootstrap),
		// Revisions are read by name, uncached by any informer: the agent
		// may only get them, and keeps those its NodeFirewall names.
		Revisions: &agent.Revisions{Reader: mgr.GetAPIReader(), Namespace: o.revisionNS},
		// The address sets' shards are watched, in the same namespace.
		ShardNamespace: o.revisionNS,
		// And the revisions marked current, metadata only.
		CurrentRevisions: current,
		ConfirmerFor: func(endpoint string) agent.Confirmer {
			return &agent.TCPConfirmer{Endpoint: endpoint, NetnsPath: o.netnsPath}
		},
	}
	if logs != nil {
		r.LogSources = logs.SetSources
		if err := mgr.Add(manager.RunnableFunc(logs.Run)); err != nil {
			return err
		}
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	go followLiveHeap(ctx, 2*time.Second)
	ctrl.Log.Info("starting agent", "node", o.nodeName, "table", o.table, "netns", o.netnsPath)
	// Fail-static: on exit the table stays in the kernel.
	return mgr.Start(ctx)
}

// whileNoConfig ends the help of the flags a NodeFirewallConfig overrides.
const whileNoConfig = "; the NodeFirewallConfig named default, when there is one, takes precedence."

func parseFlags() *options {
	o := &options{}
	flag.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "Name of this node (default $NODE_NAME).")
	flag.StringVar(&o.table, "table", compile.DefaultTable, "The one nftables table (family inet) the agent owns.")
	flag.StringVar(&o.netnsPath, "netns", "", "Program the network namespace at this path instead of the agent's own.")
	flag.DurationVar(&o.resync, "resync-period", 10*time.Second, "How often the kernel table is compared with the desired ruleset and repaired"+whileNoConfig)
	flag.StringVar(&o.inbound, "failsafe-inbound", compile.FormatFailsafes(compile.DefaultFailsafeInbound()),
		`Inbound ports accepted before any rule, as "tcp:22,tcp:2379-2380,udp:67-68", or "none"`+whileNoConfig)
	flag.StringVar(&o.outbound, "failsafe-outbound", compile.FormatFailsafes(compile.DefaultFailsafeOutbound()),
		`Outbound ports accepted before any rule, as "udp:53,tcp:6443", or "none"`+whileNoConfig)
	flag.StringVar(&o.metricsAddr, "metrics-bind-address", ":9861", "Address of the metrics endpoint; 0 disables it.")
	flag.StringVar(&o.probeAddr, "health-probe-bind-address", ":9862", "Address of the health probes; 0 disables them.")
	flag.BoolVar(&o.secureMetrics, "metrics-secure", true,
		"Serve metrics over HTTPS, each scrape authenticated (TokenReview) and authorized (SubjectAccessReview, GET /metrics) through the API server; "+
			"false serves plain HTTP to anyone who reaches the port.")
	flag.BoolVar(&o.cleanup, "cleanup", false, "Delete the agent's table and exit.")
	flag.Float64Var(&o.qps, "kube-api-qps", 20, "Queries per second to the API server.")
	flag.IntVar(&o.burst, "kube-api-burst", 40, "Burst of queries to the API server.")
	flag.DurationVar(&o.confirmWait, "confirm-timeout", 10*time.Second,
		"After each new ruleset, how long the control plane may stay unreachable before the agent reverts to the previous ruleset; 0 disables the check"+whileNoConfig)
	flag.StringVar(&o.confirmAddr, "confirm-endpoint", "",
		"host:port the node must still reach after an apply (default: the API server from the kubeconfig)"+whileNoConfig)
	flag.UintVar(&o.logGroup, "log-group", uint(compile.DefaultLogGroup),
		"NFLOG group of logged rules; the agent writes each packet logged there as a JSON line on its standard output.")
	flag.IntVar(&o.logQueue, "log-queue", nflog.DefaultQueueLen, "Lines waiting for standard output at most; more are dropped and counted.")
	flag.BoolVar(&o.setLookups, "set-lookups", true,
		"Compile runs of simple rules into concatenated-set lookups (per-packet cost independent of the rule count); "+
			"false programs one nftables rule per rule, evaluated in order as iptables does"+whileNoConfig)
	flag.StringVar(&o.revisionNS, "revision-namespace", "nodefw-system",
		"Namespace of the ControllerRevisions holding the policies' rules that the NodeFirewall names and the address sets' contents: the controller's namespace.")
	o.zap.BindFlags(flag.CommandLine)
	flag.Parse()
	return o
}

// compileOptions are how the agent compiles its node's NodeFirewall.
func (o *options) compileOptions() (compile.Options, error) {
	in, err := compile.ParseFailsafes(o.inbound)
	if err != nil {
		return compile.Options{}, fmt.Errorf("--failsafe-inbound: %w", err)
	}
	out, err := compile.ParseFailsafes(o.outbound)
	if err != nil {
		return compile.Options{}, fmt.Errorf("--failsafe-outbound: %w", err)
	}
	if o.logGroup > 65535 {
		return compile.Options{}, fmt.Errorf("--log-group: %d is not an NFLOG group (0-65535)", o.logGroup)
	}
	return compile.Options{Table: o.table, FailsafeInbound: in, FailsafeOutbound: out, SetLookups: o.setLookups, LogGroup: uint16(o.logGroup)}, nil
}

// newManager creates the manager, its cache watching only the node's
// NodeFirewall, the NodeFirewallConfig and the address sets' shards.
func newManager(cfg *rest.Config, o *options) (ctrl.Manager, error) {
	// Only the kinds the agent reads: its own, and the ControllerRevisions
	// that hold the rules and the address sets; not every built-in kind.
	scheme := runtime.NewScheme()
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(appsv1.AddToScheme(scheme))
	utilruntime.Must(fwv1.AddToScheme(scheme))
	metricsOpts := metricsserver.Options{BindAddress: o.metricsAddr, SecureServing: o.secureMetrics,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}}
	if o.secureMetrics {
		metricsOpts.FilterProvider = agent.MetricsAuthFilter
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsOpts,
		HealthProbeBindAddress: o.probeAddr,
		Cache:                  agent.CacheOptions(o.nodeName, o.revisionNS),
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	return mgr, nil
}

// confirmer checks, after each new ruleset, that the node still reaches
// the control plane at apiHost (or --confirm-endpoint). It is made even
// when --confirm-timeout is 0: a NodeFirewallConfig may turn the check on.
func (o *options) confirmer(apiHost string) (agent.Confirmer, error) {
	addr := o.confirmAddr
	if addr == "" {
		var err error
		if addr, err = hostPort(apiHost); err != nil {
			return nil, fmt.Errorf("--confirm-endpoint: %w", err)
		}
	}
	return &agent.TCPConfirmer{Endpoint: addr, NetnsPath: o.netnsPath}, nil
}

// hostPort turns the API server URL into the host:port to dial.
func hostPort(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	if u.Host == "" {
		// A bare host:port, as some kubeconfigs write it.
		return rawURL, nil
	}
	if u.Port() != "" {
		return u.Host, nil
	}
	port := "443"
	if u.Scheme == "http" {
		port = "80"
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// openLogReader binds the NFLOG group of logged rules, in the namespace the
// agent programs, writing lines to standard output.
func openLogReader(o *options) (*nflog.Reader, error) {
	open := func() (*nflog.Reader, error) { return nflog.Open(uint16(o.logGroup), o.logQueue) }
	var r *nflog.Reader
	var err error
	if o.netnsPath == "" {
		r, err = open()
	} else {
		err = inNetns(o.netnsPath, func() error {
			var oerr error
			r, oerr = open()
			return oerr
		})
	}
	if err != nil {
		return nil, err
	}
	lm := agent.NewLogMetrics(metrics.Registry)
	r.Node, r.Out = o.nodeName, os.Stdout
	r.Logged, r.Dropped = agent.CounterVec{CounterVec: lm.Logged}, agent.CounterVec{CounterVec: lm.Dropped}
	return r, nil
}

// inNetns runs fn on a thread that entered the namespace at path; the
// thread ends with fn, so no other goroutine runs there. The socket fn
// opens stays in the namespace.
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread exits with the goroutine
		f, err := os.Open(path)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
