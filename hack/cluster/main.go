// Command cluster runs the local cluster of `make cluster`: a real
// Kubernetes control plane and two kubelet nodes in network namespaces of
// this machine, with kube-proxy (nftables mode on one node, iptables mode
// on the other) and flannel's VXLAN, and nodefw deployed from
// config/default with images built from this repository. See
// internal/localcluster.
//
//	cluster up      replace any earlier cluster with a new one, deploy nodefw
//	cluster down    remove the cluster and everything it left on the machine
//
// It needs root, the binaries of hack/cluster/build.sh and
// KUBEBUILDER_ASSETS pointing at kube-apiserver and etcd; `make cluster`
// and `make cluster-down` provide them.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nodefw/nodefw/internal/localcluster"
)

func main() {
	repoRoot := flag.String("repo-root", ".", "the repository's root")
	deploy := flag.Bool("deploy", true, "deploy nodefw from config/default once the cluster is up")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [flags] up|down\n", filepath.Base(os.Args[0]))
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	var err error
	switch flag.Arg(0) {
	case "up":
		err = up(ctx, *repoRoot, *deploy, logf)
	case "down":
		err = localcluster.Down(ctx, logf)
		if err == nil {
			logf("the local cluster is gone")
		}
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

func up(ctx context.Context, repoRoot string, deploy bool, logf func(string, ...any)) error {
	c, err := localcluster.Up(ctx, localcluster.Options{RepoRoot: repoRoot, Logf: logf})
	if err != nil {
		return err
	}
	defer c.Close()
	if deploy {
		logf("deploying nodefw from config/default (images %s, %s)", localcluster.ManagerImage.Ref, localcluster.AgentImage.Ref)
		if err := c.Deploy(ctx); err != nil {
			return err
		}
	}
	fmt.Printf(`
The local cluster is up: nodes %s (control plane, kube-proxy nftables) and
%s (kube-proxy iptables), pods in %s over flannel VXLAN.

  export KUBECONFIG=%s
  export PATH=$PWD/bin/cluster/bin:$PATH   # the cluster's kubectl
  kubectl get nodes,pods -A
  kubectl apply -k config/samples          # the sample policies
  ip netns exec %s nft list table inet nodefw

Logs are in %s. Remove everything with: make cluster-down
`, c.Nodes[0].Name, c.Nodes[1].Name, localcluster.PodNetwork, c.Kubeconfig, c.Nodes[1].Name, localcluster.LogPath("*"))
	return nil
}
