package importer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// Sets of `ipset save` output, named by `-m set --match-set NAME src|dst`,
// become NodeFirewallAddressSets: only sets of addresses (hash:ip,
// hash:net) of either family, whose entries are all plain addresses and
// CIDRs. A set is imported whole, imported with reported changes
// (entries it could not take), or not at all.

// SourceIPSet marks the warnings about the ipset file.
const SourceIPSet = "ipset"

// addressSetTypes are the ipset types whose entries are single addresses
// or networks.
var addressSetTypes = map[string]bool{"hash:ip": true, "hash:net": true}

// ipsetCreateOptions are the options of `create` that do not change what
// a set of addresses matches, and whether each takes a value.
var ipsetCreateOptions = map[string]bool{
	"hashsize": true, "maxelem": true, "bucketsize": true, "initval": true,
	"counters": false, "comment": false, "skbinfo": false, "forceadd": false,
}

// ipsetAddOptions are the options of `add` that do not change what an
// entry matches, and whether each takes a value.
var ipsetAddOptions = map[string]bool{
	"comment": true, "packets": true, "bytes": true, "skbmark": true, "skbprio": true, "skbqueue": true,
	// Every entry of a set created with timeout has one; the create line's
	// warning covers them.
	"timeout": true,
}

// ipset is one set of the ipset file.
type ipset struct {
	name, kind string
	family     string
	line       int
	// create is the create line's text.
	create    string
	addresses []string
	// unsupported says why the set is not imported; rules naming it are
	// not translated.
	unsupported string
	// changed says why the set imported matches otherwise than in ipset.
	changed string
	// nomatch are the entries added with nomatch: exceptions to the
	// entries that hold them (see nomatch.go).
	nomatch []netip.Prefix
	// except are the nomatch entries the rules naming the set carve out of
	// their peer; nil when the set's addresses already leave them out.
	except []string
}

// ipsetFile is what an `ipset save` file holds.
type ipsetFile struct {
	sets     map[string]*ipset
	order    []string
	warnings []Warning
}

func (f *ipsetFile) warn(line int, text, format string, args ...any) {
	f.warnings = append(f.warnings, Warning{Source: SourceIPSet, Line: line, Text: text, Reason: fmt.Sprintf(format, args...)})
}

// note is warn for a line imported exactly (Warning.Exact).
func (f *ipsetFile) note(line int, text, format string, args ...any) {
	f.warnings = append(f.warnings, Warning{Source: SourceIPSet, Line: line, Text: text, Reason: fmt.Sprintf(format, args...), Exact: true})
}

// parseIPSet reads `ipset save` output. It fails only on a read error;
// everything it cannot take is a warning.
func parseIPSet(r io.Reader) (*ipsetFile, error) {
	f := &ipsetFile{sets: map[string]*ipset{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), maxLineBytes)
	n := 0
	for sc.Scan() {
		n++
		f.line(n, strings.TrimSpace(sc.Text()))
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("ipset line %d: longer than %d bytes", n+1, maxLineBytes)
		}
		return nil, err
	}
	for _, name := range f.order {
		s := f.sets[name]
		if s.unsupported == "" && len(s.nomatch) > 0 {
			f.carveNomatch(s)
		}
		if s.unsupported == "" && len(s.addresses) > v1alpha1.MaxAddressSetEntries {
			s.unsupported = fmt.Sprintf("%d entries: a NodeFirewallAddressSet holds %d; split the set", len(s.addresses), v1alpha1.MaxAddressSetEntries)
			f.warn(s.line, s.create, "set %s has %s", name, s.unsupported)
		}
	}
	// The warnings about whole sets come after reading them: in line order.
	slices.SortStableFunc(f.warnings, func(a, b Warning) int { return a.Line - b.Line })
	return f, nil
}

func (f *ipsetFile) line(n int, text string) {
	if text == "" || strings.HasPrefix(text, "#") {
		return
	}
	toks, err := tokenize(text)
	if err != nil {
		f.warn(n, text, "%v", err)
		return
	}
	switch toks[0] {
	case "create", "-N", "add", "-A":
		if len(toks) < 3 {
			f.warn(n, text, "not an ipset save line: create NAME TYPE or add NAME ENTRY")
			return
		}
		if toks[0] == "create" || toks[0] == "-N" {
			f.create(n, text, toks[1], toks[2], toks[3:])
		} else {
			f.add(n, text, toks[1], toks[2], toks[3:])
		}
	default:
		f.warn(n, text, "ipset command %s is not supported: only create and add, as ipset save prints them", toks[0])
	}
}

func (f *ipsetFile) create(n int, text, name, kind string, opts []string) {
	if _, ok := f.sets[name]; ok {
		f.warn(n, text, "set %s created twice: the second is ignored", name)
		return
	}
	s := &ipset{name: name, kind: kind, family: "inet", line: n, create: text}
	f.sets[name] = s
	f.order = append(f.order, name)
	if !addressSetTypes[kind] {
		s.unsupported = fmt.Sprintf("of type %s: only hash:ip and hash:net sets of addresses become NodeFirewallAddressSets", kind)
		f.warn(n, text, "set %s is %s", name, s.unsupported)
		return
	}
	for i := 0; i < len(opts); i++ {
		opt := opts[i]
		takes, known := ipsetCreateOptions[opt]
		switch opt {
		case "family", "timeout", "netmask":
			takes, known = true, true
		}
		v := ""
		if takes {
			if i+1 >= len(opts) {
				s.unsupported = fmt.Sprintf("option %s needs a value", opt)
				break
			}
			i++
			v = opts[i]
		}
		switch {
		case opt == "family":
			if v != "inet" && v != "inet6" {
				s.unsupported = fmt.Sprintf("family %s: only inet and inet6", v)
			}
			s.family = v
		case opt == "netmask":
			// hash:ip netmask stores networks, which would need every entry
			// widened: not done.
			s.unsupported = fmt.Sprintf("netmask %s: entries stand for networks of that size, not supported", v)
		case opt == "timeout":
			s.changed = fmt.Sprintf("entries expire after %ss in ipset, and rules or daemons may add them at run time; nodefw keeps those saved, for good", v)
			f.warn(n, text, "set %s has a timeout: %s", name, s.changed)
		case !known:
			s.unsupported = fmt.Sprintf("option %s is not supported", opt)
		}
		if s.unsupported != "" {
			break
		}
	}
	if s.unsupported != "" {
		f.warn(n, text, "set %s not imported: %s", name, s.unsupported)
	}
}

func (f *ipsetFile) add(n int, text, name, entry string, opts []string) {
	s, ok := f.sets[name]
	if !ok {
		f.warn(n, text, "set %s is added to before it is created: skipped", name)
		return
	}
	if s.unsupported != "" {
		// The create line's warning covers the set.
		return
	}
	skip := func(format string, args ...any) {
		reason := fmt.Sprintf(format, args...)
		f.warn(n, text, "entry skipped: %s", reason)
		if s.changed == "" {
			s.changed = "entries of the set were skipped (see the ipset warnings)"
		}
	}
	nomatch := false
	for i := 0; i < len(opts); i++ {
		opt := opts[i]
		if opt == "nomatch" {
			nomatch = true
			continue
		}
		takes, known := ipsetAddOptions[opt]
		if !known {
			skip("option %s is not supported", opt)
			return
		}
		if takes {
			i++
		}
	}
	if strings.Contains(entry, "-") {
		skip("range %s is not supported: only addresses and CIDRs", entry)
		return
	}
	a, reason := normalizeAddress(entry)
	if reason != "" {
		skip("%s", reason)
		return
	}
	is6 := strings.Contains(a, ":")
	if is6 != (s.family == "inet6") {
		skip("%s is not of the set's family %s", entry, s.family)
		return
	}
	if p, err := netip.ParsePrefix(a); err == nil && p.Masked() != p {
		// ipset stores the network; so does the set.
		a = p.Masked().String()
	}
	if nomatch {
		if s.kind != "hash:net" {
			skip("nomatch is an option of hash:net sets only")
			return
		}
		s.nomatch = append(s.nomatch, mustPrefix(a))
		return
	}
	s.addresses = append(s.addresses, a)
}

// setNameFor is the Kubernetes name of an ipset set: the name itself when
// valid, else its lower-case when valid and no other set of the input
// has the same lower-case; reason says why there is none.
func setNameFor(raw string, all map[string]bool) (string, string) {
	if len(validation.IsDNS1123Subdomain(raw)) == 0 {
		return raw, ""
	}
	lower := strings.ToLower(raw)
	if errs := validation.IsDNS1123Subdomain(lower); len(errs) > 0 {
		return "", fmt.Sprintf("set name %s is not a valid Kubernetes name (%s): rename the set", raw, strings.Join(errs, "; "))
	}
	for other := range all {
		if other != raw && strings.ToLower(other) == lower {
			return "", fmt.Sprintf("set name %s is not a valid Kubernetes name, and its lower-case %s is also the lower-case of set %s: rename one of them", raw, lower, other)
		}
	}
	return lower, ""
}

// addressSets are the NodeFirewallAddressSets of the sets imported, in
// the file's order.
func (f *ipsetFile) addressSets(all map[string]bool) []*v1alpha1.NodeFirewallAddressSet {
	var out []*v1alpha1.NodeFirewallAddressSet
	for _, raw := range f.order {
		s := f.sets[raw]
		if s.unsupported != "" {
			continue
		}
		name, reason := setNameFor(raw, all)
		if reason != "" {
			f.warn(s.line, "create "+raw, "set %s not imported: %s", raw, reason)
			continue
		}
		as := &v1alpha1.NodeFirewallAddressSet{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "NodeFirewallAddressSet"},
			ObjectMeta: metav1.ObjectMeta{Name: name},
		}
		for _, a := range s.addresses {
			as.Spec.Addresses = append(as.Spec.Addresses, v1alpha1.AddressSetEntry(a))
		}
		out = append(out, as)
	}
	return out
}

// collectSetNames gathers the set names of every rule line and of the
// ipset file, before any is translated: whether a name may be lowered
// depends on all of them.
func (im *importer) collectSetNames() {
	im.setNames = map[string]bool{}
	for _, entries := range im.chains {
		for _, e := range entries {
			for i := 0; i+1 < len(e.args); i++ {
				if e.args[i] == "--match-set" {
					im.setNames[e.args[i+1]] = true
				}
			}
		}
	}
	if im.ipsets != nil {
		for name := range im.ipsets.sets {
			im.setNames[name] = true
		}
	}
}

// resolveSets names the address sets of a rule read as the
// NodeFirewallAddressSets they become: a set the ipset file does not
// import fails the rule, and a set it does not hold is a caveat.
func (im *importer) resolveSets(t parsed) parsed {
	if t.err != "" {
		return t
	}
	for _, peers := range [][]v1alpha1.Peer{t.match.From, t.match.To} {
		for i := range peers {
			raw := peers[i].AddressSet
			name, reason := setNameFor(raw, im.setNames)
			if reason != "" {
				t.err = reason
				return t
			}
			switch s, ok := im.lookupSet(raw); {
			case im.ipsets == nil:
				t.notes = append(t.notes, fmt.Sprintf("set %s imported as a reference to NodeFirewallAddressSet %s, which must exist in the cluster and hold the set's addresses (give the ipset save output to import it)", raw, name))
			case !ok:
				t.notes = append(t.notes, fmt.Sprintf("set %s is not in the ipset file: NodeFirewallAddressSet %s must exist in the cluster", raw, name))
			case s.unsupported != "":
				t.err = fmt.Sprintf("set %s is not imported: %s", raw, s.unsupported)
				return t
			case s.changed != "":
				t.notes = append(t.notes, fmt.Sprintf("set %s is imported with a change: %s", raw, s.changed))
			}
			peers[i].AddressSet = name
			if s, ok := im.lookupSet(raw); ok && len(s.except) > 0 {
				peers[i].Except = slices.Clone(s.except)
			}
		}
	}
	return t
}

func (im *importer) lookupSet(raw string) (*ipset, bool) {
	if im.ipsets == nil {
		return nil, false
	}
	s, ok := im.ipsets.sets[raw]
	return s, ok
}
