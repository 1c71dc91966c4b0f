package policytest

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/reference"
	"github.com/nodefw/nodefw/internal/resolve"
)

// File is a `nodefw test` file: the nodes and the cases, each a packet on
// a node with the verdict it must get.
type File struct {
	// FailsafeInbound and FailsafeOutbound are the agents' failsafe ports,
	// in the syntax of their flags ("tcp:22,udp:67-68", or "none"); empty
	// means the agents' defaults.
	FailsafeInbound  string `json:"failsafeInbound,omitempty"`
	FailsafeOutbound string `json:"failsafeOutbound,omitempty"`
	// Nodes are Node objects, as `kubectl get node -o yaml` prints them:
	// their labels select policies. Cases name them.
	Nodes []corev1.Node `json:"nodes,omitempty"`
	// Cases are run in order.
	Cases []Case `json:"cases"`
}

// Case is one packet on one node and what must happen to it.
type Case struct {
	// Name says what the case checks.
	Name string `json:"name"`
	// Node names a node of the file's nodes; NodeLabels instead gives the
	// labels of a node of its own ({} for none). Exactly one is set.
	Node       string            `json:"node,omitempty"`
	NodeLabels map[string]string `json:"nodeLabels,omitempty"`
	// Packet is the packet, as `nodefw trace` takes it.
	Packet Packet `json:"packet"`
	// Verdict is Accept, Drop or Reject.
	Verdict string `json:"verdict"`
	// DecidedBy, when set, is what must decide: "policy/rule", one of the
	// implicit accepts (established, loopback, neighbour-discovery,
	// failsafe) or "default".
	DecidedBy string `json:"decidedBy,omitempty"`
}

// ParseFile reads a test file strictly: an unknown key is an error, so
// that a misspelt expectation cannot pass unchecked.
func ParseFile(data []byte) (*File, error) {
	var f File
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, err
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// verdicts are the verdicts a case may expect.
var verdicts = map[string]compile.Verdict{
	"accept": compile.VerdictAccept, "drop": compile.VerdictDrop, "reject": compile.VerdictReject,
}

func (f *File) validate() error {
	var errs []error
	if _, err := f.failsafes(Overrides{}); err != nil {
		errs = append(errs, err)
	}
	if len(f.Cases) == 0 {
		errs = append(errs, errors.New("cases: the file has none"))
	}
	nodes := map[string]bool{}
	for i, n := range f.Nodes {
		switch {
		case n.Name == "":
			errs = append(errs, fmt.Errorf("nodes[%d]: metadata.name is required", i))
		case nodes[n.Name]:
			errs = append(errs, fmt.Errorf("nodes[%d]: a second node named %q", i, n.Name))
		}
		nodes[n.Name] = true
	}
	names := map[string]bool{}
	for i, c := range f.Cases {
		at := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("cases[%d] (%s): %s", i, c.Name, fmt.Sprintf(format, args...)))
		}
		switch {
		case c.Name == "":
			at("name is required")
		case names[c.Name]:
			at("a second case of that name")
		}
		names[c.Name] = true
		switch {
		case c.Node == "" && c.NodeLabels == nil:
			at("set node (a node of nodes) or nodeLabels")
		case c.Node != "" && c.NodeLabels != nil:
			at("set node or nodeLabels, not both")
		case c.Node != "" && !nodes[c.Node]:
			at("node %q is not among the file's nodes", c.Node)
		}
		if c.NodeLabels != nil {
			if _, err := labels.ValidatedSelectorFromSet(c.NodeLabels); err != nil {
				at("nodeLabels: %v", err)
			}
		}
		if _, err := c.Packet.Parse(); err != nil {
			at("packet: %v", err)
		}
		if _, ok := verdicts[strings.ToLower(c.Verdict)]; !ok {
			at("verdict %q is not Accept, Drop or Reject", c.Verdict)
		}
		if err := validDecider(c.DecidedBy); err != nil {
			at("decidedBy: %v", err)
		}
	}
	return errors.Join(errs...)
}

// implicitNames are the names a case's decidedBy may give an implicit
// accept.
var implicitNames = []reference.Implicit{
	reference.ImplicitEstablished, reference.ImplicitLoopback, reference.ImplicitNeighbourDiscovery, reference.ImplicitFailsafe,
}

func validDecider(s string) error {
	if s == "" || s == reference.DefaultName || slices.Contains(implicitNames, reference.Implicit(s)) {
		return nil
	}
	if policy, rule, ok := strings.Cut(s, "/"); ok && policy != "" && rule != "" && !strings.Contains(rule, "/") {
		return nil
	}
	return fmt.Errorf("%q is not policy/rule, default, or an implicit accept (%s)", s, implicitList())
}

func implicitList() string {
	names := make([]string, len(implicitNames))
	for i, n := range implicitNames {
		names[i] = string(n)
	}
	return strings.Join(names, ", ")
}

// Overrides replace settings of a test file, as flags of `nodefw test`
// do: a failsafe list in the agent flags' syntax replaces the file's, ""
// leaves it.
type Overrides struct {
	FailsafeInbound, FailsafeOutbound string
}

// failsafes are the file's failsafe ports, with the overrides, and the
// agents' defaults for a list neither sets.
func (f *File) failsafes(o Overrides) (resolve.Failsafes, error) {
	read := func(field, value, flag, override string, defaults []compile.Failsafe) ([]compile.Failsafe, error) {
		if override != "" {
			field, value = flag, override
		}
		if value == "" {
			return defaults, nil
		}
		fs, err := compile.ParseFailsafes(value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return fs, nil
	}
	in, err1 := read("failsafeInbound", f.FailsafeInbound, "--failsafe-inbound", o.FailsafeInbound, compile.DefaultFailsafeInbound())
	out, err2 := read("failsafeOutbound", f.FailsafeOutbound, "--failsafe-outbound", o.FailsafeOutbound, compile.DefaultFailsafeOutbound())
	return resolve.Failsafes{Inbound: in, Outbound: out}, errors.Join(err1, err2)
}

// caseNode is the node a case runs on, among the file's nodes: one of
// them, or one of its own with its labels, named so as to clash with none.
func (f *File) caseNode(c Case) ([]corev1.Node, string) {
	if c.Node != "" {
		return f.Nodes, c.Node
	}
	name := "node"
	for i := 2; slices.ContainsFunc(f.Nodes, func(n corev1.Node) bool { return n.Name == name }); i++ {
		name = fmt.Sprintf("node-%d", i)
	}
	own := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: maps.Clone(c.NodeLabels)}}
	return append(slices.Clone(f.Nodes), own), name
}
