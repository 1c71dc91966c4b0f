package policytest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// Policies and nodes as YAML manifests, from files, directories or stdin,
// for `nodefw render`, `trace` and `test` and for pkg/nodefwtest.

// ReadPolicies reads the policies of every path: a file, a directory (its
// .yaml, .yml and .json files, not its subdirectories) or - for stdin.
// Documents of other kinds are skipped; the CRD's defaults are applied.
func ReadPolicies(paths []string, stdin io.Reader) ([]fwv1.NodeFirewallPolicy, error) {
	var out []fwv1.NodeFirewallPolicy
	for _, path := range paths {
		files, err := manifestFiles(path)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			ps, err := readPolicies(f, stdin)
			if err != nil {
				return nil, err
			}
			out = append(out, ps...)
		}
	}
	return out, nil
}

// manifestFiles are the files a path names: itself, or a directory's
// manifests in name order.
func manifestFiles(path string) ([]string, error) {
	if path == "-" {
		return []string{path}, nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		if ext := filepath.Ext(e.Name()); !e.IsDir() && slices.Contains([]string{".yaml", ".yml", ".json"}, ext) {
			files = append(files, filepath.Join(path, e.Name()))
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no .yaml, .yml or .json files", path)
	}
	return files, nil
}

// readPolicies reads every NodeFirewallPolicy from a multi-document YAML
// file, applying the CRD's defaults.
func readPolicies(path string, stdin io.Reader) ([]fwv1.NodeFirewallPolicy, error) {
	var out []fwv1.NodeFirewallPolicy
	err := eachDocument(path, stdin, func(kind string, doc []byte) error {
		if kind != "NodeFirewallPolicy" {
			return nil
		}
		var p fwv1.NodeFirewallPolicy
		if err := yaml.UnmarshalStrict(doc, &p); err != nil {
			return err
		}
		if p.Spec.Mode == "" {
			p.Spec.Mode = fwv1.PolicyModeEnforce
		}
		// Apply the CRD's default priority only when the field is absent.
		var raw struct {
			Spec struct {
				Priority *int32 `json:"priority"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(doc, &raw); err == nil && raw.Spec.Priority == nil {
			p.Spec.Priority = fwv1.DefaultPriority
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

// readNodes reads the Node objects of a file.
func readNodes(path string, stdin io.Reader) ([]corev1.Node, error) {
	var out []corev1.Node
	add := func(kind string, doc []byte) error {
		if kind != "Node" {
			return nil
		}
		var n corev1.Node
		if err := yaml.Unmarshal(doc, &n); err != nil {
			return err
		}
		out = append(out, n)
		return nil
	}
	err := eachDocument(path, stdin, func(kind string, doc []byte) error {
		if kind != "NodeList" && kind != "List" {
			return add(kind, doc)
		}
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := yaml.Unmarshal(doc, &list); err != nil {
			return err
		}
		for _, item := range list.Items {
			var meta metav1.TypeMeta
			if err := json.Unmarshal(item, &meta); err != nil {
				return err
			}
			if meta.Kind == "" && kind == "NodeList" {
				meta.Kind = "Node"
			}
			if err := add(meta.Kind, item); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// ReadNodes reads the Node objects of every file (or - for stdin): Nodes,
// and the Nodes of NodeLists and Lists, as `kubectl get nodes -o yaml`
// prints them. A file without a Node is an error.
func ReadNodes(paths []string, stdin io.Reader) ([]corev1.Node, error) {
	var out []corev1.Node
	for _, path := range paths {
		nodes, err := readNodes(path, stdin)
		if err != nil {
			return nil, err
		}
		if len(nodes) == 0 {
			return nil, fmt.Errorf("%s: no Node objects", path)
		}
		out = append(out, nodes...)
	}
	return out, nil
}

// eachDocument calls fn with the kind and text of every document of a
// multi-document YAML file, or of stdin for "-"; errors name the file.
func eachDocument(path string, stdin io.Reader, fn func(kind string, doc []byte) error) error {
	data, err := ReadFile(path, stdin)
	if err != nil {
		return err
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := fn(meta.Kind, doc); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
}

// ReadFile reads a file, or stdin for "-".
func ReadFile(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(stdin)
	}
	return os.ReadFile(path)
}
