package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/resolve"
)

// runRender prints the ruleset a node with the given labels would get from
// the policies in the given files, offline, for review in pull requests.
func runRender(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	var files multiFlag
	fs.Var(&files, "f", "Policy YAML file (repeatable; - for stdin). A NodeFirewallConfig among its documents stands in for the failsafe and set-lookups flags, as in the cluster.")
	nodeLabels := fs.String("node-labels", "", "The node's labels, as k=v,k2=v2.")
	nodeName := fs.String("node-name", "node", "The node's name.")
	table := fs.String("table", compile.DefaultTable, "The agent's table name.")
	inbound := fs.String("failsafe-inbound", compile.FormatFailsafes(compile.DefaultFailsafeInbound()), "The agent's inbound failsafe ports.")
	setLookups := fs.Bool("set-lookups", true, "Render runs of simple rules as set lookups, as agents do by default; false renders linear rules, as an agent with --set-lookups=false programs.")
	outbound := fs.String("failsafe-outbound", compile.FormatFailsafes(compile.DefaultFailsafeOutbound()), "The agent's outbound failsafe ports.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(files) == 0 {
		return errors.New("render: -f is required")
	}
	var policies []fwv1.NodeFirewallPolicy
	var config *fwv1.NodeFirewallConfig
	for _, f := range files {
		ps, cfg, err := readManifests(f, stdin)
		if err != nil {
			return err
		}
		policies = append(policies, ps...)
		if cfg != nil {
			if config != nil {
				return fmt.Errorf("%s: a second NodeFirewallConfig; there is one per cluster", f)
			}
			config = cfg
		}
	}
	lbls, err := labels.ConvertSelectorToLabelsMap(*nodeLabels)
	if err != nil {
		return fmt.Errorf("--node-labels: %w", err)
	}
	in, err := compile.ParseFailsafes(*inbound)
	if err != nil {
		return fmt.Errorf("--failsafe-inbound: %w", err)
	}
	out, err := compile.ParseFailsafes(*outbound)
	if err != nil {
		return fmt.Errorf("--failsafe-outbound: %w", err)
	}
	lookups := *setLookups
	if config != nil {
		settings, err := clusterconfig.For(&config.Spec)
		if err != nil {
			return fmt.Errorf("NodeFirewallConfig %s: %w", config.Name, err)
		}
		in, out, lookups = settings.FailsafeInbound, settings.FailsafeOutbound, settings.SetLookups
	}
	node := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: *nodeName, Labels: lbls}}
	res := resolve.Resolve(resolve.Input{
		Policies:  policies,
		Nodes:     []corev1.Node{node},
		Failsafes: resolve.Failsafes{Inbound: in, Outbound: out},
	})
	for _, p := range res.Problems {
		fmt.Fprintf(stderr, "warning: policy %s: %s\n", p.Policy, p.Message)
	}
	rs, err := compile.Compile(res.Nodes[node.Name], compile.Options{Table: *table, FailsafeInbound: in, FailsafeOutbound: out, SetLookups: lookups})
	if err != nil {
		return err
	}
	var matched []string
	for _, ref := range res.Nodes[node.Name].Policies {
		matched = append(matched, ref.Name)
	}
	fmt.Fprintf(stdout, "# node %s %v: policies %s\n", node.Name, lbls, strings.Join(matched, ", "))
	_, err = io.WriteString(stdout, compile.Render(rs))
	return err
}

// readManifests reads every NodeFirewallPolicy from a multi-document YAML
// file, applying the CRD's defaults, and the NodeFirewallConfig, if the
// file holds one; other kinds are skipped.
func readManifests(path string, stdin io.Reader) ([]fwv1.NodeFirewallPolicy, *fwv1.NodeFirewallConfig, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, nil, err
	}
	var out []fwv1.NodeFirewallPolicy
	var config *fwv1.NodeFirewallConfig
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		if meta.Kind == "NodeFirewallConfig" {
			if config != nil {
				return nil, nil, fmt.Errorf("%s: a second NodeFirewallConfig; there is one per cluster", path)
			}
			config = &fwv1.NodeFirewallConfig{}
			if err := yaml.UnmarshalStrict(doc, config); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", path, err)
			}
			continue
		}
		if meta.Kind != "NodeFirewallPolicy" {
			continue
		}
		var p fwv1.NodeFirewallPolicy
		if err := yaml.UnmarshalStrict(doc, &p); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		// The CRD's defaults; an absent priority is DefaultPriority to
		// the resolver already.
		if p.Spec.Mode == "" {
			p.Spec.Mode = fwv1.PolicyModeEnforce
		}
		out = append(out, p)
	}
	return out, config, nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
