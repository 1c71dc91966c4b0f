// Command manager runs nodefw's central controller: it resolves every
// NodeFirewallPolicy against every Node into per-node NodeFirewall objects
// and rolls the node agents' reports up into policy status.
package main

import (
	"crypto/tls"
	"flag"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/controllers"
	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/reconnect"
)

func main() {
	var (
		metricsAddr      string
		probeAddr        string
		secureMetrics    bool
		enableHTTP2      bool
		leaderElect      bool
		qps              float64
		burst            int
		writeConcurrency int
		progressDeadline time.Duration
		inbound          string
		outbound         string
		revisionNS       string
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "Address the metrics endpoint binds to, e.g. :8443 (HTTPS) or :8080 (HTTP). 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the health and readiness probes bind to. 0 disables them.")
	flag.BoolVar(&secureMetrics, "metrics-secure", true, "Serve metrics over HTTPS with authentication and authorization.")
	flag.BoolVar(&enableHTTP2, "enable-http2", false, "Enable HTTP/2 for the metrics server (off by default: HTTP/2 Rapid Reset).")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader so that only one manager replica is active.")
	flag.Float64Var(&qps, "kube-api-qps", controllers.DefaultKubeAPIQPS, "Queries per second to the API server.")
	flag.IntVar(&burst, "kube-api-burst", controllers.DefaultKubeAPIBurst, "Burst of queries to the API server.")
	flag.IntVar(&writeConcurrency, "write-concurrency", controllers.DefaultWriteConcurrency, "Parallel NodeFirewall and status writes per resolve.")
	flag.StringVar(&inbound, "failsafe-inbound", compile.FormatFailsafes(compile.DefaultFailsafeInbound()),
		"The agents' inbound failsafe ports, to warn in status about rules they shadow, while there is no NodeFirewallConfig named default (which takes precedence).")
	flag.StringVar(&outbound, "failsafe-outbound", compile.FormatFailsafes(compile.DefaultFailsafeOutbound()),
		"The agents' outbound failsafe ports, to warn in status about rules they shadow, while there is no NodeFirewallConfig named default (which takes precedence).")
	flag.DurationVar(&progressDeadline, "progress-deadline", 10*time.Minute,
		"How long a policy may stay Reconciling before it is reported Stalled (ProgressDeadlineExceeded); 0 disables.")
	flag.StringVar(&revisionNS, "revision-namespace", defaultRevisionNamespace(),
		"Namespace of the ControllerRevisions that hold each policy's rules once, named by the NodeFirewalls, and each address set's contents in shards; the agents read them there (default $POD_NAMESPACE, else nodefw-system).")
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	setupLog := ctrl.Log.WithName("setup")
	if revisionNS == "" {
		setupLog.Error(nil, "--revision-namespace is empty: the agents read the address sets' shards there")
		os.Exit(1)
	}

	in, err := compile.ParseFailsafes(inbound)
	if err != nil {
		setupLog.Error(err, "parsing --failsafe-inbound")
		os.Exit(1)
	}
	out, err := compile.ParseFailsafes(outbound)
	if err != nil {
		setupLog.Error(err, "parsing --failsafe-outbound")
		os.Exit(1)
	}

	// The flags stand in for the NodeFirewallConfig while there is none.
	bootstrap := clusterconfig.Defaults()
	bootstrap.FailsafeInbound, bootstrap.FailsafeOutbound = in, out

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(fwv1.AddToScheme(scheme))

	// --kubeconfig is registered by controller-runtime; empty means in-cluster.
	cfg, err := ctrl.GetConfig()
	if err != nil {
		setupLog.Error(err, "loading kubeconfig")
		os.Exit(1)
	}
	cfg.QPS, cfg.Burst = float32(qps), burst
	// Watches come back within a second of the API server's return.
	reconnect.Wrap(cfg)

	var tlsOpts []func(*tls.Config)
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{BindAddress: metricsAddr, SecureServing: secureMetrics, TLSOpts: tlsOpts}
	if secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsOpts,
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "nodefw-controller.firewall.nodefw.io",
		// Nothing here reads managed fields, and the API server keeps
		// them on an update that leaves them out: without them the cache
		// of a large cluster's nodes and NodeFirewalls is smaller.
		Cache: cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
	})
	if err != nil {
		setupLog.Error(err, "creating manager")
		os.Exit(1)
	}
	// The agents read each address set's contents from its shards.
	shards := &controllers.AddressSetShardReconciler{
		Client:           mgr.GetClient(),
		APIReader:        mgr.GetAPIReader(),
		Namespace:        revisionNS,
		WriteConcurrency: writeConcurrency,
	}
	if err := shards.SetupWithManager(mgr); err != nil {
		setupLog.Error(err, "creating the address set shard controller")
		os.Exit(1)
	}
	if err := (&controllers.NodeFirewallPolicyReconciler{
		Client:            mgr.GetClient(),
		Recorder:          mgr.GetEventRecorder("nodefw-controller"),
		WriteConcurrency:  writeConcurrency,
		ProgressDeadline:  progressDeadline,
		Config:            clusterconfig.NewTracker(bootstrap),
		RevisionNamespace: revisionNS,
		APIReader:         mgr.GetAPIReader(),
		Shards:            shards,
	}).SetupWithManager(mgr); err != nil {
		setupLog.Error(err, "creating controller")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "adding health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		setupLog.Error(err, "adding ready check")
		os.Exit(1)
	}
	setupLog.Info("starting manager")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		setupLog.Error(err, "running manager")
		os.Exit(1)
	}
}

// defaultRevisionNamespace is the manager's own namespace, from the
// downward API, or nodefw-system.
func defaultRevisionNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return "nodefw-system"
}
