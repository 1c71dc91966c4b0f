// Package revision stores each policy's rules once, in the manner of a
// DaemonSet's history: an immutable apps/v1 ControllerRevision per
// distinct rule list of a policy, named after the policy and a hash of
// its contents, in the controller's namespace. A NodeFirewall lists the
// revisions that apply to its node (PolicyReference.Revision) instead of
// copying their rules, so its size does not grow with the rules; the
// agent fetches the revisions it needs and Expand turns the NodeFirewall
// back into the spec the compiler takes. Everything here is pure.
package revision

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

const (
	// LabelManagedBy marks the revisions the controller owns: it lists
	// and garbage-collects only those.
	LabelManagedBy = "firewall.nodefw.io/managed-by"
	// ManagedBy is LabelManagedBy's value.
	ManagedBy = "nodefw-controller"
	// LabelPolicy names the policy a revision belongs to (when the name
	// fits in a label value; AnnotationPolicy always holds it).
	LabelPolicy = "firewall.nodefw.io/policy"
	// AnnotationPolicy is the full name of the policy.
	AnnotationPolicy = "firewall.nodefw.io/policy"
	// LabelHash is the hash of the revision's data, as in its name.
	LabelHash = "firewall.nodefw.io/revision-hash"

	// hashLen is how many hex digits of the hash a name carries.
	hashLen = 10
)

// Data is what a revision holds: the policy spec's rules, whole, as JSON
// of the same shape as the policy's spec. The mode and default actions
// of the generation travel in the NodeFirewall's PolicyReference.
type Data struct {
	// rules are the policy's rules, in order.
	Rules []fwv1.Rule `json:"rules,omitempty"`
}

// For is the revision holding p's rules in namespace. Policies whose rules
// are the same get different revisions (the name and the hash include the
// policy's name), generations of one policy with the same rules the same
// one, which is then reused.
func For(p *fwv1.NodeFirewallPolicy, namespace string) *appsv1.ControllerRevision {
	raw, err := json.Marshal(Data{Rules: p.Spec.Rules})
	if err != nil {
		// Rules are plain structs of strings, numbers and slices.
		panic(fmt.Sprintf("encoding the rules of policy %s: %v", p.Name, err))
	}
	hash := Hash(p.Name, raw)
	cr := &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{
			Name:        Name(p.Name, hash),
			Namespace:   namespace,
			Labels:      map[string]string{LabelManagedBy: ManagedBy, LabelHash: hash},
			Annotations: map[string]string{AnnotationPolicy: p.Name},
		},
		Data:     runtime.RawExtension{Raw: raw},
		Revision: p.Generation,
	}
	if len(validation.IsValidLabelValue(p.Name)) == 0 {
		cr.Labels[LabelPolicy] = p.Name
	}
	return cr
}

// Hash is the hash of a policy's revision data, hashLen hex digits.
func Hash(policy string, data []byte) string {
	h := sha256.New()
	h.Write([]byte(policy))
	h.Write([]byte{0})
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))[:hashLen]
}

// Name is the revision's name: the policy's name, shortened to leave room,
// a dash and the hash.
func Name(policy, hash string) string {
	prefix := policy
	if max := validation.DNS1123SubdomainMaxLength - len(hash) - 1; len(prefix) > max {
		prefix = prefix[:max]
	}
	// A shortened name may end in a dot or dash, which cannot precede "-".
	prefix = strings.TrimRight(prefix, ".-")
	return prefix + "-" + hash
}

// Policy is the name of the policy a revision belongs to.
func Policy(cr *appsv1.ControllerRevision) string {
	return cr.Annotations[AnnotationPolicy]
}

// Rules decodes the rules a revision holds.
func Rules(cr *appsv1.ControllerRevision) ([]fwv1.Rule, error) {
	var d Data
	if err := json.Unmarshal(cr.Data.Raw, &d); err != nil {
		return nil, fmt.Errorf("decoding ControllerRevision %s: %w", cr.Name, err)
	}
	return d.Rules, nil
}

// Names are the revisions a NodeFirewall spec references, in evaluation
// order, without repeats.
func Names(spec *fwv1.NodeFirewallSpec) []string {
	var out []string
	seen := map[string]bool{}
	for _, ref := range spec.Policies {
		if ref.Revision != "" && !seen[ref.Revision] {
			seen[ref.Revision] = true
			out = append(out, ref.Revision)
		}
	}
	return out
}

// Expand is spec with the rules of its revisions in place: for each policy
// reference in order, the rules of the revision it names, or those of
// spec.rules that came from it when it names none. rules maps each
// revision's name to its rules. A spec that names no revision is returned
// as it is, so a NodeFirewall written with its rules, by hand or by an
// earlier controller, compiles as before.
func Expand(spec fwv1.NodeFirewallSpec, rules map[string][]fwv1.Rule) (fwv1.NodeFirewallSpec, error) {
	if len(Names(&spec)) == 0 {
		return spec, nil
	}
	inline := map[string][]fwv1.NodeFirewallRule{}
	for _, r := range spec.Rules {
		inline[r.Policy] = append(inline[r.Policy], r)
	}
	out := spec
	// One allocation of the right size: at 10,000 rules each doubling of
	// a growing slice would copy megabytes.
	total := len(spec.Rules)
	for _, ref := range spec.Policies {
		total += len(rules[ref.Revision])
	}
	out.Rules = make([]fwv1.NodeFirewallRule, 0, total)
	listed := map[string]bool{}
	for _, ref := range spec.Policies {
		listed[ref.Name] = true
		if ref.Revision == "" {
			out.Rules = append(out.Rules, inline[ref.Name]...)
			continue
		}
		if len(inline[ref.Name]) > 0 {
			return fwv1.NodeFirewallSpec{}, fmt.Errorf("policy %s names revision %s and also has rules in spec.rules", ref.Name, ref.Revision)
		}
		rs, ok := rules[ref.Revision]
		if !ok {
			return fwv1.NodeFirewallSpec{}, fmt.Errorf("ControllerRevision %s of policy %s is missing", ref.Revision, ref.Name)
		}
		mode := ref.Mode
		if mode == "" {
			mode = fwv1.PolicyModeEnforce
		}
		for _, r := range rs {
			out.Rules = append(out.Rules, r.NodeRule(ref.Name, mode))
		}
	}
	// Rules of no listed policy (a hand-written addition) come last.
	for _, r := range spec.Rules {
		if !listed[r.Policy] {
			out.Rules = append(out.Rules, r)
		}
	}
	return out, nil
}

// The label and annotation by which the controller marks a followed
// policy's current revision on the revision itself, as a DaemonSet's
// history says which revision is current: the nodes that follow the
// policy (PolicyReference.Follow) apply that revision, and report the
// generation. Only the metadata of a revision changes; its data never does.
const (
	// LabelCurrent, "true", marks a policy's current revision. The agents
	// watch the metadata of the revisions that carry it, and of no other.
	LabelCurrent = "firewall.nodefw.io/current"
	// AnnotationGeneration is the policy generation the current revision
	// holds the rules of.
	AnnotationGeneration = "firewall.nodefw.io/generation"
)

// Current is what the nodes following a policy apply: the revision
// holding its rules and the policy generation they belong to.
type Current struct {
	Revision   string
	Generation int64
}

// CurrentOf is the policy whose current revision cr's metadata marks, and
// what it marks; false when it marks none.
func CurrentOf(cr metav1.Object) (string, Current, bool) {
	gen, err := strconv.ParseInt(cr.GetAnnotations()[AnnotationGeneration], 10, 64)
	policy := cr.GetAnnotations()[AnnotationPolicy]
	if cr.GetLabels()[LabelCurrent] != "true" || policy == "" || err != nil || gen <= 0 {
		return "", Current{}, false
	}
	return policy, Current{Revision: cr.GetName(), Generation: gen}, true
}

// Currents are, by policy name, the current revisions the metadata of
// revisions marks: of two marked for one policy (the next marked, the
// last not yet unmarked), the one of the newer generation.
func Currents(revisions []metav1.PartialObjectMetadata) map[string]Current {
	out := map[string]Current{}
	for i := range revisions {
		policy, cur, ok := CurrentOf(&revisions[i])
		if !ok {
			continue
		}
		if prev, seen := out[policy]; !seen || cur.Generation > prev.Generation {
			out[policy] = cur
		}
	}
	return out
}

// MarkCurrent is the merge patch of a revision's metadata that marks it
// as its policy's current revision at generation.
func MarkCurrent(generation int64) []byte {
	return []byte(fmt.Sprintf(`{"metadata":{"labels":{%q:"true"},"annotations":{%q:%q}}}`,
		LabelCurrent, AnnotationGeneration, strconv.FormatInt(generation, 10)))
}

// UnmarkCurrent is the merge patch that takes the mark away.
func UnmarkCurrent() []byte {
	return []byte(fmt.Sprintf(`{"metadata":{"labels":{%q:null},"annotations":{%q:null}}}`, LabelCurrent, AnnotationGeneration))
}

// Metadata is an empty ControllerRevision of which only the metadata is
// read or written.
func Metadata() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("ControllerRevision"))
	return m
}

// MetadataList is an empty list of ControllerRevisions' metadata.
func MetadataList() *metav1.PartialObjectMetadataList {
	l := &metav1.PartialObjectMetadataList{}
	l.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("ControllerRevisionList"))
	return l
}

// CurrentSelector selects the revisions marked current.
func CurrentSelector() map[string]string {
	return map[string]string{LabelCurrent: "true", LabelManagedBy: ManagedBy}
}

// Pin is spec with every followed policy reference pinned to the current
// revision of its policy, from current by policy name: generation and
// revision set, follow kept, so that Names and Expand read it and
// FollowedGenerations reports it. A followed policy without a current
// revision is an error.
func Pin(spec fwv1.NodeFirewallSpec, current map[string]Current) (fwv1.NodeFirewallSpec, error) {
	if !Follows(&spec) {
		return spec, nil
	}
	out := spec
	out.Policies = make([]fwv1.PolicyReference, len(spec.Policies))
	for i, ref := range spec.Policies {
		if ref.Follow {
			if ref.Revision != "" || ref.Generation != 0 {
				return fwv1.NodeFirewallSpec{}, fmt.Errorf("policy %s is followed and also names generation %d, revision %q", ref.Name, ref.Generation, ref.Revision)
			}
			c, ok := current[ref.Name]
			if !ok {
				return fwv1.NodeFirewallSpec{}, fmt.Errorf("followed policy %s has no current revision (none labelled %s)", ref.Name, LabelCurrent)
			}
			ref.Generation, ref.Revision = c.Generation, c.Revision
		}
		out.Policies[i] = ref
	}
	return out, nil
}

// Follows tells whether spec follows any policy.
func Follows(spec *fwv1.NodeFirewallSpec) bool {
	for _, ref := range spec.Policies {
		if ref.Follow {
			return true
		}
	}
	return false
}

// Followed are the names of the policies spec follows, in order.
func Followed(spec *fwv1.NodeFirewallSpec) []string {
	var out []string
	for _, ref := range spec.Policies {
		if ref.Follow {
			out = append(out, ref.Name)
		}
	}
	return out
}

// FollowedGenerations are, by policy name, the generations a pinned spec
// (see Pin) applies of the policies it follows; nil when it follows none.
func FollowedGenerations(pinned *fwv1.NodeFirewallSpec) map[string]int64 {
	var out map[string]int64
	for _, ref := range pinned.Policies {
		if ref.Follow {
			if out == nil {
				out = map[string]int64{}
			}
			out[ref.Name] = ref.Generation
		}
	}
	return out
}
