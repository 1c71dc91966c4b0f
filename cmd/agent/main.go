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
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/agent"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/nft"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
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
	)
	flag.StringVar(&nodeName, "node-name", os.Getenv("NODE_NAME"), "Name of this node (default $NODE_NAME).")
	flag.StringVar(&table, "table", compile.DefaultTable, "The one nftables table (family inet) the agent owns.")
	flag.StringVar(&netnsPath, "netns", "", "Program the network namespace at this path instead of the agent's own.")
	flag.DurationVar(&resync, "resync-period", 10*time.Second, "How often the kernel table is compared with the desired ruleset and repaired.")
	flag.StringVar(&inbound, "failsafe-inbound", compile.FormatFailsafes(compile.DefaultFailsafeInbound()),
		`Inbound ports accepted before any rule, as "tcp:22,tcp:2379-2380,udp:67-68", or "none".`)
	flag.StringVar(&outbound, "failsafe-outbound", compile.FormatFailsafes(compile.DefaultFailsafeOutbound()),
		`Outbound ports accepted before any rule, as "udp:53,tcp:6443", or "none".`)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":9861", "Address of the metrics endpoint; 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":9862", "Address of the health probes; 0 disables them.")
	flag.BoolVar(&secureMetrics, "metrics-secure", false, "Serve metrics over HTTPS with authentication and authorization.")
	flag.BoolVar(&cleanup, "cleanup", false, "Delete the agent's table and exit.")
	flag.Float64Var(&qps, "kube-api-qps", 20, "Queries per second to the API server.")
	flag.IntVar(&burst, "kube-api-burst", 40, "Burst of queries to the API server.")
	flag.DurationVar(&confirmWait, "confirm-timeout", 10*time.Second,
		"After each new ruleset, how long the control plane may stay unreachable before the agent reverts to the previous ruleset; 0 disables the check.")
	flag.StringVar(&confirmAddr, "confirm-endpoint", "",
		"host:port the node must still reach after an apply (default: the API server from the kubeconfig).")
	flag.BoolVar(&setLookups, "set-lookups", true,
		"Compile runs of simple rules into concatenated-set lookups (per-packet cost independent of the rule count); "+
			"false programs one nftables rule per rule, evaluated in order as iptables does.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))

	fw, err := nft.New(netnsPath, table)
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	defer fw.Close()
	if cleanup {
		return fw.Delete()
	}
	if nodeName == "" {
		return fmt.Errorf("--node-name (or $NODE_NAME) is required")
	}
	in, err := compile.ParseFailsafes(inbound)
	if err != nil {
		return fmt.Errorf("--failsafe-inbound: %w", err)
	}
	out, err := compile.ParseFailsafes(outbound)
	if err != nil {
		return fmt.Errorf("--failsafe-outbound: %w", err)
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(fwv1.AddToScheme(scheme))
	// --kubeconfig is registered by controller-runtime; empty means in-cluster.
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(qps), burst

	metricsOpts := metricsserver.Options{BindAddress: metricsAddr, SecureServing: secureMetrics,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}}
	if secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsOpts,
		HealthProbeBindAddress: probeAddr,
		Cache:                  agent.CacheOptions(nodeName),
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}

	var confirm agent.Confirmer
	if confirmWait > 0 {
		if confirmAddr == "" {
			if confirmAddr, err = hostPort(cfg.Host); err != nil {
				return fmt.Errorf("--confirm-endpoint: %w", err)
			}
		}
		confirm = &agent.TCPConfirmer{Endpoint: confirmAddr, NetnsPath: netnsPath}
	}

	metrics.Registry.MustRegister(agent.NewRuleCounters(fw.Counters))

	r := &agent.Reconciler{
		Client:       mgr.GetClient(),
		Recorder:     mgr.GetEventRecorder("nodefw-agent"),
		Firewall:     fw,
		Metrics:      agent.NewMetrics(metrics.Registry),
		NodeName:     nodeName,
		Compile:      compile.Options{Table: table, FailsafeInbound: in, FailsafeOutbound: out, SetLookups: setLookups},
		ResyncPeriod: resync,

		Confirm:        confirm,
		ConfirmTimeout: confirmWait,
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
	ctrl.Log.Info("starting agent", "node", nodeName, "table", table, "netns", netnsPath)
	// Fail-static: on exit the table stays in the kernel.
	return mgr.Start(ctx)
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
