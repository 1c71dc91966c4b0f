package importer

import (
	"fmt"
	"io"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// WriteYAML writes the policy as a YAML manifest: apiVersion, kind,
// metadata and spec. Status and empty metadata fields are left out.
func WriteYAML(w io.Writer, p *v1alpha1.NodeFirewallPolicy) error {
	if p == nil {
		return fmt.Errorf("no policy")
	}
	tm := p.TypeMeta
	if tm.APIVersion == "" {
		tm.APIVersion = v1alpha1.GroupVersion.String()
	}
	if tm.Kind == "" {
		tm.Kind = "NodeFirewallPolicy"
	}
	manifest := struct {
		metav1.TypeMeta
		Metadata metav1.ObjectMeta               `json:"metadata"`
		Spec     v1alpha1.NodeFirewallPolicySpec `json:"spec"`
	}{
		TypeMeta: tm,
		Metadata: metav1.ObjectMeta{
			Name:        p.Name,
			Namespace:   p.Namespace,
			Labels:      p.Labels,
			Annotations: p.Annotations,
		},
		Spec: p.Spec,
	}
	out, err := yaml.Marshal(manifest)
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

// WriteAddressSetYAML writes an address set as a YAML document that
// follows another: a `---` line, then apiVersion, kind, metadata and spec.
func WriteAddressSetYAML(w io.Writer, s *v1alpha1.NodeFirewallAddressSet) error {
	manifest := struct {
		metav1.TypeMeta
		Metadata metav1.ObjectMeta                   `json:"metadata"`
		Spec     v1alpha1.NodeFirewallAddressSetSpec `json:"spec"`
	}{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "NodeFirewallAddressSet"},
		Metadata: metav1.ObjectMeta{Name: s.Name},
		Spec:     s.Spec,
	}
	out, err := yaml.Marshal(manifest)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, "---\n"); err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}
