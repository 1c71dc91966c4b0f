package importer

import (
	"strconv"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// maxNameLen is the longest rule name the API accepts (a DNS label).
const maxNameLen = 63

// baseName derives a rule name: from the rule's comment when it has one
// that leaves a DNS label, otherwise from what the rule matches, e.g.
// "input-udp-8472" or "forward-from-10-244-0-0-16".
func baseName(r *v1alpha1.Rule, comment string) string {
	if n := sanitize(comment); n != "" {
		return n
	}
	parts := []string{string(r.Chain)}
	if r.Protocol != "" {
		parts = append(parts, string(r.Protocol))
	}
	for _, p := range r.Ports {
		s := strconv.Itoa(int(p.Port))
		if p.EndPort != 0 && p.EndPort != p.Port {
			s += "-" + strconv.Itoa(int(p.EndPort))
		}
		parts = append(parts, s)
	}
	if r.InInterface != "" {
		parts = append(parts, "in-"+interfaceWord(r.InInterface))
	}
	if r.OutInterface != "" {
		parts = append(parts, "out-"+interfaceWord(r.OutInterface))
	}
	if len(r.Sources) > 0 {
		parts = append(parts, "from-"+r.Sources[0])
	}
	if len(r.Destinations) > 0 {
		parts = append(parts, "to-"+r.Destinations[0])
	}
	if len(r.From) > 0 {
		parts = append(parts, "from-"+r.From[0].AddressSet)
	}
	if len(r.To) > 0 {
		parts = append(parts, "to-"+r.To[0].AddressSet)
	}
	for _, s := range r.States {
		parts = append(parts, string(s))
	}
	for _, p := range r.SourcePorts {
		s := "sport-" + strconv.Itoa(int(p.Port))
		if p.EndPort != 0 && p.EndPort != p.Port {
			s += "-" + strconv.Itoa(int(p.EndPort))
		}
		parts = append(parts, s)
	}
	for _, t := range r.ICMPTypes {
		parts = append(parts, string(t))
	}
	if r.Limit != nil {
		parts = append(parts, "limit")
	}
	if r.ConnLimit != nil {
		parts = append(parts, "connlimit")
	}
	if r.Action != v1alpha1.ActionAccept || len(parts) == 1 {
		parts = append(parts, string(r.Action))
	}
	return sanitize(strings.Join(parts, "-"))
}

// interfaceWord spells an interface pattern for a name: "cali+" is "cali",
// "+" is "any".
func interfaceWord(iface string) string {
	if iface == "+" {
		return "any"
	}
	return strings.TrimSuffix(iface, "+")
}

// sanitize turns s into a DNS label: lower case letters, digits and single
// dashes, at most 63 characters. It returns "" when nothing is left.
func sanitize(s string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(s) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			sep := dash && b.Len() > 0
			if sep && b.Len()+2 > maxNameLen || b.Len()+1 > maxNameLen {
				break
			}
			if sep {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(c)
			continue
		}
		dash = true
	}
	return strings.TrimRight(b.String(), "-")
}

// uniqueName returns base, or base with a "-N" suffix when base is taken,
// and records the name as used.
func uniqueName(base string, used map[string]bool) string {
	name := base
	for n := 2; used[name]; n++ {
		suffix := "-" + strconv.Itoa(n)
		b := base
		if len(b)+len(suffix) > maxNameLen {
			b = strings.TrimRight(b[:maxNameLen-len(suffix)], "-")
		}
		name = b + suffix
	}
	used[name] = true
	return name
}
