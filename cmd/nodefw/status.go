package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// runStatus prints a per-policy and per-node summary, readable at a glance.
func runStatus(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "Path to a kubeconfig (default: $KUBECONFIG or ~/.kube/config).")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := clusterClient(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var policies fwv1.NodeFirewallPolicyList
	if err := c.List(ctx, &policies); err != nil {
		return err
	}
	var nfws fwv1.NodeFirewallList
	if err := c.List(ctx, &nfws); err != nil {
		return err
	}
	writeStatus(stdout, policies.Items, nfws.Items)
	return nil
}

// clusterClient is a read client of nodefw's kinds, from the kubeconfig
// at path, or $KUBECONFIG or ~/.kube/config when path is "".
func clusterClient(path string) (client.Client, error) {
	if path != "" {
		if err := os.Setenv("KUBECONFIG", path); err != nil {
			return nil, err
		}
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(fwv1.AddToScheme(scheme))
	return client.New(cfg, client.Options{Scheme: scheme})
}

func writeStatus(w io.Writer, policies []fwv1.NodeFirewallPolicy, nfws []fwv1.NodeFirewall) {
	sort.Slice(policies, func(i, j int) bool { return policies[i].Name < policies[j].Name })
	sort.Slice(nfws, func(i, j int) bool { return nfws[i].Name < nfws[j].Name })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tPRIORITY\tMODE\tRULES\tMATCHED\tAPPLIED\tFAILED\tREADY\tMESSAGE")
	for _, p := range policies {
		ready, msg := conditionSummary(p.Status.Conditions, p.Generation)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", p.Name, p.Spec.Priority, p.Spec.Mode, len(p.Spec.Rules),
			p.Status.MatchedNodes, p.Status.AppliedNodes, p.Status.FailedNodes, ready, msg)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "NODE\tPOLICIES\tRULES\tINPUT\tFORWARD\tOUTPUT\tREADY\tLAST APPLIED\tMESSAGE")
	for _, n := range nfws {
		ready, msg := conditionSummary(n.Status.Conditions, n.Generation)
		applied := "-"
		if t := n.Status.LastAppliedTime; t != nil {
			applied = time.Since(t.Time).Round(time.Second).String() + " ago"
		}
		d := n.Spec.DefaultActions
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, len(n.Spec.Policies), n.Status.RuleCount,
			d.Input, d.Forward, d.Output, ready, applied, msg)
	}
	_ = tw.Flush()
}

// conditionSummary gives Ready's status, or Stale when it describes an
// older generation, and its message.
func conditionSummary(conds []metav1.Condition, generation int64) (string, string) {
	c := meta.FindStatusCondition(conds, fwv1.ConditionReady)
	if c == nil {
		return "Unknown", "no status yet"
	}
	if c.ObservedGeneration != generation {
		return "Stale", c.Message
	}
	return string(c.Status), c.Reason + ": " + c.Message
}
