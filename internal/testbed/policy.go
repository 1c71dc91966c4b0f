package testbed

import (
	"bytes"
	"context"
	"fmt"
	"k8s.io/apimachinery/pkg/util/wait"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// SampleNodePortClients is the placeholder client CIDR of the
// nodeports-from-cidr sample, which tells users to replace it with theirs.
const SampleNodePortClients = "192.168.0.0/16"

// LoadPolicies reads every NodeFirewallPolicy in the YAML files of dir
// (kustomization.yaml and other kinds are skipped), sorted by name.
func LoadPolicies(dir string) ([]*fwv1.NodeFirewallPolicy, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	var out []*fwv1.NodeFirewallPolicy
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, doc := range bytes.Split(raw, []byte("\n---")) {
			var meta metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if meta.Kind != "NodeFirewallPolicy" {
				continue
			}
			p := &fwv1.NodeFirewallPolicy{}
			if err := yaml.UnmarshalStrict(doc, p); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no NodeFirewallPolicy in %s", dir)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// SamplePolicies loads config/samples, with the placeholder replaced as
// the sample's comment asks users to do: the nodeports-from-cidr sample's
// clients by the nodes' LAN. The samples' node and pod addresses are
// peers the controller resolves from the cluster's Nodes.
func (c *Cluster) SamplePolicies() ([]*fwv1.NodeFirewallPolicy, error) {
	ps, err := LoadPolicies(filepath.Join(c.opts.RepoRoot, "config", "samples"))
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		for i := range p.Spec.Rules {
			r := &p.Spec.Rules[i]
			if j := slices.Index(r.Sources, SampleNodePortClients); j >= 0 {
				r.Sources[j] = LANPrefix.String()
			}
		}
	}
	return ps, nil
}

// ApplyPolicy creates the policy, or replaces the spec, labels and
// annotations of the existing one.
func (c *Cluster) ApplyPolicy(ctx context.Context, p *fwv1.NodeFirewallPolicy) error {
	want := p.DeepCopy()
	want.ResourceVersion = ""
	err := c.Client.Create(ctx, want)
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	return c.UpdatePolicy(ctx, p.Name, func(cur *fwv1.NodeFirewallPolicy) {
		cur.Spec = *p.Spec.DeepCopy()
		cur.Labels, cur.Annotations = p.Labels, p.Annotations
	})
}

// UpdatePolicy changes a policy with mutate, retrying on conflicts.
func (c *Cluster) UpdatePolicy(ctx context.Context, name string, mutate func(*fwv1.NodeFirewallPolicy)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := &fwv1.NodeFirewallPolicy{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, p); err != nil {
			return err
		}
		mutate(p)
		return c.Client.Update(ctx, p)
	})
}

// DeletePolicy deletes a policy and waits until it is gone; absent is fine.
func (c *Cluster) DeletePolicy(ctx context.Context, name string) error {
	p := &fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := client.IgnoreNotFound(c.Client.Delete(ctx, p)); err != nil {
		return err
	}
	return wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		err := c.Client.Get(ctx, client.ObjectKey{Name: name}, &fwv1.NodeFirewallPolicy{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

// Policy returns the policy called name.
func (c *Cluster) Policy(ctx context.Context, name string) (*fwv1.NodeFirewallPolicy, error) {
	p := &fwv1.NodeFirewallPolicy{}
	return p, c.Client.Get(ctx, client.ObjectKey{Name: name}, p)
}

// RemoveRules drops the named rules from a policy spec.
func RemoveRules(p *fwv1.NodeFirewallPolicy, names ...string) {
	p.Spec.Rules = slices.DeleteFunc(p.Spec.Rules, func(r fwv1.Rule) bool { return slices.Contains(names, r.Name) })
}

// SetNodeLabel sets a label of a node; a nil value removes it.
func (c *Cluster) SetNodeLabel(ctx context.Context, node, key string, value *string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n := &corev1.Node{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: node}, n); err != nil {
			return err
		}
		if value == nil {
			delete(n.Labels, key)
		} else {
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			n.Labels[key] = *value
		}
		return c.Client.Update(ctx, n)
	})
}

// PolicyReady reports whether a policy's status describes its current
// generation, is Ready, and counts every matched node as applied.
func PolicyReady(p *fwv1.NodeFirewallPolicy) bool {
	ready := meta.FindStatusCondition(p.Status.Conditions, fwv1.ConditionReady)
	return ready != nil && ready.Status == metav1.ConditionTrue && ready.ObservedGeneration == p.Generation &&
		p.Status.ObservedGeneration == p.Generation &&
		p.Status.AppliedNodes == p.Status.MatchedNodes && p.Status.FailedNodes == 0
}

// NodeFirewallReady reports whether a node's agent reports its current
// generation programmed.
func NodeFirewallReady(nfw *fwv1.NodeFirewall) bool {
	ready := meta.FindStatusCondition(nfw.Status.Conditions, fwv1.ConditionReady)
	return ready != nil && ready.Status == metav1.ConditionTrue && ready.ObservedGeneration == nfw.Generation &&
		nfw.Status.ObservedGeneration == nfw.Generation
}

// WaitReady waits until every policy is Ready for its current generation
// with all matched nodes applied, and every node's NodeFirewall is Ready.
// On timeout the error says what is not ready.
func (c *Cluster) WaitReady(ctx context.Context) error {
	var pending []string
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		var err error
		pending, err = c.notReady(ctx)
		return err == nil && len(pending) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("not ready: %s: %w", strings.Join(pending, "; "), err)
	}
	return nil
}

func (c *Cluster) notReady(ctx context.Context) ([]string, error) {
	var pending []string
	var policies fwv1.NodeFirewallPolicyList
	if err := c.Client.List(ctx, &policies); err != nil {
		return []string{err.Error()}, err
	}
	for i := range policies.Items {
		p := &policies.Items[i]
		if !PolicyReady(p) {
			pending = append(pending, describePolicy(p))
		}
	}
	var nfws fwv1.NodeFirewallList
	if err := c.Client.List(ctx, &nfws); err != nil {
		return []string{err.Error()}, err
	}
	byName := map[string]*fwv1.NodeFirewall{}
	for i := range nfws.Items {
		byName[nfws.Items[i].Name] = &nfws.Items[i]
	}
	for _, n := range c.Nodes {
		nfw := byName[n.Name]
		switch {
		case nfw == nil:
			pending = append(pending, "no NodeFirewall for node "+n.Name+" yet")
		case !NodeFirewallReady(nfw):
			pending = append(pending, describeNodeFirewall(nfw))
		}
	}
	return pending, nil
}

func describePolicy(p *fwv1.NodeFirewallPolicy) string {
	s := fmt.Sprintf("policy %s generation %d: observed %d, matched %d, applied %d, failed %d",
		p.Name, p.Generation, p.Status.ObservedGeneration, p.Status.MatchedNodes, p.Status.AppliedNodes, p.Status.FailedNodes)
	if r := meta.FindStatusCondition(p.Status.Conditions, fwv1.ConditionReady); r != nil {
		s += fmt.Sprintf(", Ready=%s (%s: %s)", r.Status, r.Reason, r.Message)
	}
	return s
}

func describeNodeFirewall(nfw *fwv1.NodeFirewall) string {
	s := fmt.Sprintf("NodeFirewall %s generation %d: observed %d", nfw.Name, nfw.Generation, nfw.Status.ObservedGeneration)
	if r := meta.FindStatusCondition(nfw.Status.Conditions, fwv1.ConditionReady); r != nil {
		s += fmt.Sprintf(", Ready=%s (%s: %s)", r.Status, r.Reason, r.Message)
	}
	if nfw.Status.LastError != "" {
		s += ", last error: " + nfw.Status.LastError
	}
	return s
}

// NotReady lists what WaitReady waits for now: policies and NodeFirewalls
// not Ready, each with its status; none when everything is.
func (c *Cluster) NotReady(ctx context.Context) ([]string, error) { return c.notReady(ctx) }
