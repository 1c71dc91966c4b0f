package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"k8s.io/apimachinery/pkg/util/wait"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// Where config/default and the chart install nodefw.
const (
	ManagerNamespace  = "nodefw-system"
	AgentNamespace    = "nodefw-agent"
	ManagerDeployment = "nodefw-controller-manager"
	AgentDaemonSet    = "nodefw-agent"
	// fieldManager owns what Apply writes.
	fieldManager = "nodefw-localcluster"
	// keepAnnotation is Helm's: helm uninstall leaves such objects.
	keepAnnotation = "helm.sh/resource-policy"
)

// KustomizeObjects builds config/default as `kubectl apply -k` would and
// points its manager and agent containers at the local images, as
// `kustomize edit set image` would.
func KustomizeObjects(repoRoot string) ([]*unstructured.Unstructured, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(repoRoot, "config", "default"))
	if err != nil {
		return nil, fmt.Errorf("kustomize build config/default: %w", err)
	}
	raw, err := resMap.AsYaml()
	if err != nil {
		return nil, err
	}
	objs, err := parseObjects(raw)
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if err := setImages(o); err != nil {
			return nil, err
		}
	}
	return objs, nil
}

// setImages replaces the images of the manager and agent containers with
// the local ones.
func setImages(o *unstructured.Unstructured) error {
	if o.GetKind() != "Deployment" && o.GetKind() != "DaemonSet" {
		return nil
	}
	containers, _, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	if err != nil {
		return err
	}
	for _, c := range containers {
		m := c.(map[string]any)
		image, _ := m["image"].(string)
		repo := image
		if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
			repo = repo[:i]
		}
		switch {
		case strings.HasSuffix(repo, "/nodefw-manager"):
			m["image"] = ManagerImage.Ref
		case strings.HasSuffix(repo, "/nodefw-agent"):
			m["image"] = AgentImage.Ref
		}
	}
	return unstructured.SetNestedSlice(o.Object, containers, "spec", "template", "spec", "containers")
}

// HelmObjects renders charts/nodefw as `helm template` does, with the
// local images as values.
func HelmObjects(repoRoot string) ([]*unstructured.Unstructured, error) {
	ch, err := loader.Load(filepath.Join(repoRoot, "charts", "nodefw"))
	if err != nil {
		return nil, fmt.Errorf("loading the chart: %w", err)
	}
	image := func(img Image) map[string]any {
		repo, tag, _ := strings.Cut(img.Ref, ":")
		return map[string]any{"repository": repo, "tag": tag}
	}
	values := map[string]any{
		"manager": map[string]any{"image": image(ManagerImage)},
		"agent":   map[string]any{"image": image(AgentImage)},
	}
	opts := chartutil.ReleaseOptions{Name: "nodefw", Namespace: "kube-system", Revision: 1, IsInstall: true}
	vals, err := chartutil.ToRenderValues(ch, values, opts, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	files, err := engine.Engine{Strict: true}.Render(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("rendering the chart: %w", err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		if strings.HasSuffix(name, ".yaml") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	// helm install creates the chart's crds/ first; they are not templates.
	var objs []*unstructured.Unstructured
	for _, crd := range ch.CRDObjects() {
		list, err := parseObjects(crd.File.Data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", crd.Filename, err)
		}
		objs = append(objs, list...)
	}
	for _, name := range names {
		list, err := parseObjects([]byte(files[name]))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		objs = append(objs, list...)
	}
	return objs, nil
}

func parseObjects(raw []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// applyOrder puts namespaces and CRDs first, as kubectl apply does.
func applyOrder(kind string) int {
	switch kind {
	case "Namespace":
		return 0
	case "CustomResourceDefinition":
		return 1
	}
	return 2
}

// Apply creates or updates the objects with server-side apply, namespaces
// and CRDs first, waiting for the CRDs to be established.
func (c *Cluster) Apply(ctx context.Context, objs []*unstructured.Unstructured) error {
	sorted := append([]*unstructured.Unstructured(nil), objs...)
	sort.SliceStable(sorted, func(i, j int) bool { return applyOrder(sorted[i].GetKind()) < applyOrder(sorted[j].GetKind()) })
	for i, o := range sorted {
		if i > 0 && applyOrder(sorted[i-1].GetKind()) == 1 && applyOrder(o.GetKind()) > 1 {
			if err := c.waitCRDs(ctx, sorted[:i]); err != nil {
				return err
			}
		}
		if o.GetKind() == "CustomResourceDefinition" {
			if err := c.waitCRDNotTerminating(ctx, o.GetName()); err != nil {
				return err
			}
		}
		if err := c.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()),
			client.FieldOwner(fieldManager), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return nil
}

// waitCRDNotTerminating waits until a CRD that an earlier removal deleted
// is gone. Applied while it terminates, it would still be Established
// and then vanish with its custom resources, and the objects applied
// after it would fail with "the server could not find the requested
// resource".
func (c *Cluster) waitCRDNotTerminating(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		var crd apiextensionsv1.CustomResourceDefinition
		err := c.Client.Get(ctx, client.ObjectKey{Name: name}, &crd)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return err == nil && crd.DeletionTimestamp == nil, err
	})
	if err != nil {
		return fmt.Errorf("CRD %s still being deleted: %w", name, err)
	}
	return nil
}

func (c *Cluster) waitCRDs(ctx context.Context, objs []*unstructured.Unstructured) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := c.Client.Get(ctx, client.ObjectKey{Name: o.GetName()}, &crd); err != nil {
				return false, err
			}
			if crd.DeletionTimestamp != nil {
				return false, nil
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return served(ctx, c.Client, &crd)
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not established: %w", o.GetName(), err)
		}
	}
	return nil
}

// served reports whether the API server serves the CRD's resources: a CRD
// created again right after it was deleted is Established before the
// server has dropped the old one's handler, which answers 404 for a
// moment.
func served(ctx context.Context, c client.Client, crd *apiextensionsv1.CustomResourceDefinition) (bool, error) {
	version := ""
	for _, v := range crd.Spec.Versions {
		if v.Served {
			version = v.Name
			break
		}
	}
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion(crd.Spec.Group + "/" + version)
	list.SetKind(crd.Spec.Names.ListKind)
	err := c.List(ctx, list, client.Limit(1))
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return false, nil
	}
	return err == nil, err
}

// Deploy installs nodefw from config/default with the local images and
// waits until the manager and every agent are ready.
func (c *Cluster) Deploy(ctx context.Context) error {
	objs, err := KustomizeObjects(c.opts.RepoRoot)
	if err != nil {
		return err
	}
	if err := c.Apply(ctx, objs); err != nil {
		return err
	}
	return c.WaitNodefwReady(ctx)
}

// WaitNodefwReady waits until the manager Deployment is available and the
// agent DaemonSet has a ready agent on every node, with their current
// generations rolled out.
func (c *Cluster) WaitNodefwReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var state string
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(context.Context) (bool, error) {
		var dep appsv1.Deployment
		var ds appsv1.DaemonSet
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ManagerNamespace, Name: ManagerDeployment}, &dep); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: AgentNamespace, Name: AgentDaemonSet}, &ds); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		state = fmt.Sprintf("manager %d/%d available (generation %d, observed %d); agents %d/%d ready, %d updated (generation %d, observed %d)",
			dep.Status.AvailableReplicas, dep.Status.Replicas, dep.Generation, dep.Status.ObservedGeneration,
			ds.Status.NumberReady, ds.Status.DesiredNumberScheduled, ds.Status.UpdatedNumberScheduled, ds.Generation, ds.Status.ObservedGeneration)
		return dep.Status.ObservedGeneration == dep.Generation && dep.Status.AvailableReplicas >= 1 &&
			dep.Status.UpdatedReplicas == dep.Status.Replicas &&
			ds.Status.ObservedGeneration == ds.Generation && ds.Status.DesiredNumberScheduled == int32(len(c.Nodes)) &&
			ds.Status.NumberReady == ds.Status.DesiredNumberScheduled &&
			ds.Status.UpdatedNumberScheduled == ds.Status.DesiredNumberScheduled, nil
	})
	if err != nil {
		return fmt.Errorf("nodefw not ready: %s: %w", state, err)
	}
	return nil
}

// Uninstall removes what Apply installed in the order `make undeploy`
// does: the policies first (each agent removes its table when its node's
// rules go), then the manager, waiting until it has stopped so that it
// recreates no NodeFirewall, then the NodeFirewalls (each agent's finalizer removes its table), then the
// objects in reverse order. Objects Helm keeps on uninstall (the CRDs,
// with the chart's defaults) stay when keepAnnotated is true, as `helm
// uninstall` leaves them.
func (c *Cluster) Uninstall(ctx context.Context, objs []*unstructured.Unstructured, keepAnnotated bool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := c.Client.DeleteAllOf(ctx, &fwv1.NodeFirewallPolicy{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err := c.waitGone(ctx, &fwv1.NodeFirewallPolicyList{}); err != nil {
		return err
	}
	var dep appsv1.Deployment
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ManagerNamespace, Name: ManagerDeployment}, &dep); err == nil {
		zero := int32(0)
		dep.Spec.Replicas = &zero
		if err := c.Client.Update(ctx, &dep); err != nil {
			return err
		}
	}
	// A terminating manager still reconciles: it would create the
	// NodeFirewalls deleted below again.
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
		var pods corev1.PodList
		err := c.Client.List(ctx, &pods, client.InNamespace(ManagerNamespace),
			client.MatchingLabels{"app.kubernetes.io/component": "controller-manager"})
		return len(pods.Items) == 0, err
	})
	if err != nil {
		return fmt.Errorf("waiting for the manager to stop: %w", err)
	}
	if err := c.Client.DeleteAllOf(ctx, &fwv1.NodeFirewall{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err := c.waitGone(ctx, &fwv1.NodeFirewallList{}); err != nil {
		return err
	}
	for i := len(objs) - 1; i >= 0; i-- {
		o := objs[i]
		// helm uninstall keeps what is annotated so, and the CRDs of the
		// chart's crds/, which Helm never deletes.
		if keepAnnotated && (o.GetAnnotations()[keepAnnotation] == "keep" || o.GetKind() == "CustomResourceDefinition") {
			continue
		}
		if err := c.Client.Delete(ctx, o.DeepCopy()); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return nil
}

// waitGone waits until a list of nodefw objects is empty.
func (c *Cluster) waitGone(ctx context.Context, list client.ObjectList) error {
	return wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
		if err := c.Client.List(ctx, list); err != nil {
			return false, err
		}
		switch l := list.(type) {
		case *fwv1.NodeFirewallPolicyList:
			return len(l.Items) == 0, nil
		case *fwv1.NodeFirewallList:
			return len(l.Items) == 0, nil
		}
		return false, fmt.Errorf("unexpected list %T", list)
	})
}
