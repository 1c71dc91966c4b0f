// Package importer translates an existing iptables ruleset, as printed by
// `iptables-save` or `iptables -S` or typed as `iptables -A/-I` commands,
// into a NodeFirewallPolicy.
//
// The filter table's INPUT, FORWARD and OUTPUT chains become rules, and
// the PREROUTING chains of the raw and mangle tables rules of the
// PreRouting chain (see prerouting.go). The user-defined chains of the
// filter table are taken in at their jumps: each
// rule of a chain becomes a rule that also matches what the jump matched,
// a RETURN hands the packets it matches back to the rest of the calling
// chain, and loops are refused. Chains that belong to Kubernetes (KUBE-*),
// flannel (FLANNEL-*), Calico (cali-*) and Docker (DOCKER*) are left to
// their owners and reported once each. A rule is either translated
// exactly, translated with a reported caveat, or not at all: every line
// that cannot be translated is reported as a Warning with its line number,
// never dropped silently, and Result.Summary counts them.
package importer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// DefaultName is the policy name used when Options.Name is empty.
const DefaultName = "imported"

// maxLineBytes bounds one input line.
const maxLineBytes = 1 << 20

// Options shape the imported policy.
type Options struct {
	// Name is the policy's metadata.name; DefaultName when empty.
	Name string
	// NodeSelector is the policy's node selector; the zero value `{}`
	// selects every node.
	NodeSelector metav1.LabelSelector
	// Priority is the policy's spec.priority (0 to 10000); nil leaves it to
	// the API server's default.
	Priority *int32
	// Mode is the policy's spec.mode; "" leaves it to the API server's
	// default (Enforce). Audit is the careful first step for an imported
	// ruleset with a Drop default.
	Mode v1alpha1.PolicyMode
	// IPSet is `ipset save` output: its sets of addresses become
	// Result.AddressSets, and rules naming a set not in it are reported.
	// Nil when there is none: rules naming sets are then reported as
	// needing them in the cluster.
	IPSet io.Reader
}

// Warning reports one input line that was not translated, or was translated
// with a caveat.
type Warning struct {
	// Source is "" for the ruleset and SourceIPSet for Options.IPSet.
	Source string
	// Line is the 1-based line number in the input (the first line of a
	// line continued with a trailing backslash).
	Line int
	// Text is the line as read, without surrounding blanks.
	Text string
	// Reason says why the line was not translated, or what to check.
	Reason string
	// Exact marks a note about a line translated exactly, but in another
	// shape than it has in the input (an ipset set's nomatch entries): no
	// difference, so `nodefw import --strict` passes it.
	Exact bool
}

func (w Warning) String() string {
	if w.Source != "" {
		return fmt.Sprintf("%s line %d: %s (%s)", w.Source, w.Line, w.Reason, w.Text)
	}
	return fmt.Sprintf("line %d: %s (%s)", w.Line, w.Reason, w.Text)
}

// Result is an imported policy and what could not be imported.
type Result struct {
	Policy   *v1alpha1.NodeFirewallPolicy
	Warnings []Warning
	// Summary counts the rule lines of the filter table and of the raw and
	// mangle PREROUTING chains by what became of them.
	Summary Summary
	// SkippedLines are the numbers of those rule lines not translated, in
	// order: each has a warning, but for the rules of chains left to other
	// components, reported once per chain.
	SkippedLines []int
	// AddressSets are the sets of Options.IPSet imported, in its order;
	// the warnings about that file have Source SourceIPSet and follow the
	// ruleset's.
	AddressSets []*v1alpha1.NodeFirewallAddressSet
}

// Import reads an iptables ruleset and translates it into a
// NodeFirewallPolicy. It fails only on a read error or invalid options;
// everything it cannot translate is reported in Result.Warnings.
func Import(r io.Reader, opts Options) (*Result, error) {
	name := opts.Name
	if name == "" {
		name = DefaultName
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, fmt.Errorf("invalid policy name %q: %s", name, strings.Join(errs, "; "))
	}
	if p := opts.Priority; p != nil && (*p < 0 || *p > 10000) {
		return nil, fmt.Errorf("invalid priority %d: must be between 0 and 10000", *p)
	}
	switch opts.Mode {
	case "", v1alpha1.PolicyModeEnforce, v1alpha1.PolicyModeAudit:
	default:
		return nil, fmt.Errorf("invalid mode %q: must be Enforce or Audit", opts.Mode)
	}

	im := newImporter()
	if opts.IPSet != nil {
		f, err := parseIPSet(opts.IPSet)
		if err != nil {
			return nil, err
		}
		im.ipsets = f
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), maxLineBytes)
	lineNo := 0
	var pending []string
	pendingLine := 0
	for sc.Scan() {
		lineNo++
		raw := strings.TrimRight(sc.Text(), " \t\r")
		// A shell line continued with a trailing backslash.
		if strings.HasSuffix(raw, `\`) && !strings.HasPrefix(strings.TrimSpace(raw), "#") {
			if pending == nil {
				pendingLine = lineNo
			}
			pending = append(pending, strings.TrimSuffix(raw, `\`))
			continue
		}
		if pending != nil {
			pending = append(pending, raw)
			im.line(pendingLine, strings.Join(pending, " "))
			pending = nil
			continue
		}
		im.line(lineNo, raw)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", lineNo+1, maxLineBytes)
		}
		return nil, err
	}
	if pending != nil {
		im.line(pendingLine, strings.Join(pending, " "))
	}

	im.collectSetNames()
	emitted := im.build()
	policy := &v1alpha1.NodeFirewallPolicy{
		TypeMeta: metav1.TypeMeta{
			APIVersion: v1alpha1.GroupVersion.String(),
			Kind:       "NodeFirewallPolicy",
		},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.NodeFirewallPolicySpec{
			NodeSelector: *opts.NodeSelector.DeepCopy(),
			Priority:     opts.Priority,
			Mode:         opts.Mode,
			Rules:        im.rules(emitted),
		},
	}
	im.defaults.LogDrops = im.logDrops
	if im.defaults != (v1alpha1.DefaultActions{}) {
		d := im.defaults
		policy.Spec.DefaultActions = &d
	}
	im.warnImplicitAccepts(emitted)
	im.warnPreRoutingScope(emitted)
	sort.SliceStable(im.warnings, func(i, j int) bool { return im.warnings[i].Line < im.warnings[j].Line })
	res := &Result{Policy: policy, Warnings: im.warnings, Summary: im.summary(), SkippedLines: im.skippedLines()}
	if im.ipsets != nil {
		res.AddressSets = im.ipsets.addressSets(im.setNames)
		res.Warnings = append(res.Warnings, im.ipsets.warnings...)
	}
	return res, nil
}

// warnImplicitAccepts reports chains whose drops nodefw does not reproduce
// exactly: nodefw accepts established and related connections, loopback,
// ICMPv6 neighbour discovery and the failsafe ports before any rule, so a
// chain that drops without first accepting ESTABLISHED,RELATED behaves
// differently (replies to the node's own connections, for one, pass).
func (im *importer) warnImplicitAccepts(emitted map[v1alpha1.Chain][]emittedRule) {
	for _, c := range v1alpha1.Chains {
		var first *Warning
		if im.defaults.For(c) == v1alpha1.ChainPolicyDrop {
			w := im.defaultLines[c]
			first = &w
		}
		for _, e := range emitted[c] {
			if acceptsEstablished(&e.rule) {
				first = nil
				break
			}
			if e.rule.Action != v1alpha1.ActionAccept {
				if first == nil || e.line < first.Line {
					first = &Warning{Line: e.line, Text: e.text}
				}
				break
			}
		}
		if first != nil {
			im.difference(first.Line, first.Text, "%s drops without first accepting ESTABLISHED,RELATED: nodefw accepts established and related connections, loopback, ICMPv6 neighbour discovery and the failsafe ports before any rule, so some traffic dropped here will pass", strings.ToUpper(string(c)))
		}
	}
}

// acceptsEstablished reports whether r is the usual `-m conntrack --ctstate
// ESTABLISHED,RELATED -j ACCEPT` with no other match.
func acceptsEstablished(r *v1alpha1.Rule) bool {
	if r.Action != v1alpha1.ActionAccept || !isEmptyMatch(withoutStates(*r)) {
		return false
	}
	est, rel := false, false
	for _, s := range r.States {
		est = est || s == v1alpha1.ConnStateEstablished
		rel = rel || s == v1alpha1.ConnStateRelated
	}
	return est && rel
}

// entry is one rule line of a chain imported, in chain order (-I positions
// applied), whatever the chain and whether or not it translates.
type entry struct {
	line int
	text string
	args []string
}

type importer struct {
	warnings []Warning
	// warned are the warnings given, so that a line of a chain taken in
	// at several jumps is reported once.
	warned map[Warning]bool
	// chains are the filter table's chains, built-in and user-defined,
	// and the PREROUTING chains of raw and mangle; parsedChains their
	// rules read, on first use.
	chains       map[chainRef][]entry
	parsedChains map[chainRef][]parsedEntry
	// declared are the user-defined chains declared (`:NAME`, -N), with
	// where.
	declared map[string]Warning
	defaults v1alpha1.DefaultActions
	// defaultLines are where each chain's policy was set.
	defaultLines map[v1alpha1.Chain]Warning

	// table is the table of the current iptables-save section, "" outside
	// one (plain `iptables -S` output and commands are the filter table).
	table string
	// skippedTables are the tables already reported as not imported.
	skippedTables map[string]bool
	// reportedChains are the chains already reported as skipped.
	reportedChains map[string]bool
	// status is what became of each rule line of the chains imported.
	status map[int]lineStatus
	// budgetSpent says the rules taken in from user chains outgrew what a
	// policy holds, which has been reported.
	budgetSpent bool
	// differences counts the warnings about behaviour beyond one line's
	// rule.
	differences int
	// reached are the chains taken in at some jump.
	reached map[string]bool
	// logDrops says a LOG ends a built-in chain whose default is DROP.
	logDrops bool

	// preRoutingPolicies are the policies of raw's and mangle's
	// PREROUTING, by table, with where they were set.
	preRoutingPolicies map[string]tablePolicy
	// preRoutingLocal says, by table, that PREROUTING's `-m addrtype !
	// --dst-type LOCAL -j ACCEPT` has been met, for every packet, by the
	// rules being written: the rules after it in that table see only
	// packets addressed to the node, as nodefw's PreRouting does.
	preRoutingLocal map[string]bool

	// ipsets is the ipset file, nil without one.
	ipsets *ipsetFile
	// setNames are the names of the sets of the ruleset's --match-set
	// options and of the ipset file, as given.
	setNames map[string]bool
}

func newImporter() *importer {
	return &importer{
		warned:         map[Warning]bool{},
		chains:         map[chainRef][]entry{},
		parsedChains:   map[chainRef][]parsedEntry{},
		declared:       map[string]Warning{},
		defaultLines:   map[v1alpha1.Chain]Warning{},
		skippedTables:  map[string]bool{},
		reportedChains: map[string]bool{},
		status:         map[int]lineStatus{},
		reached:        map[string]bool{},

		preRoutingPolicies: map[string]tablePolicy{},
	}
}

// warn reports a line that is not translated, or a fact about the input
// that is not a rule line's (a skipped table); a warning already given is
// not given again.
func (im *importer) warn(line int, text, format string, args ...any) {
	w := Warning{Line: line, Text: text, Reason: fmt.Sprintf(format, args...)}
	if im.warned[w] {
		return
	}
	im.warned[w] = true
	im.warnings = append(im.warnings, w)
}

// skip reports a rule line that is not translated.
func (im *importer) skip(e entry, format string, args ...any) {
	im.warn(e.line, e.text, format, args...)
	im.mark(e.line, statusSkipped)
}

// note reports a caveat of a rule line that is translated.
func (im *importer) note(e entry, reason string) {
	im.warn(e.line, e.text, "%s", reason)
	im.mark(e.line, statusChanged)
}

// difference reports behaviour the policy changes beyond one line's rule.
func (im *importer) difference(line int, text, format string, args ...any) {
	w := Warning{Line: line, Text: text, Reason: fmt.Sprintf(format, args...)}
	if !im.warned[w] {
		im.differences++
	}
	im.warn(line, text, format, args...)
}

// builtinChains maps the filter table's built-in chains to API chains.
var builtinChains = map[string]v1alpha1.Chain{
	"INPUT":   v1alpha1.ChainInput,
	"FORWARD": v1alpha1.ChainForward,
	"OUTPUT":  v1alpha1.ChainOutput,
}

// otherTableChains are built-in chains of the nat, mangle and raw tables.
var otherTableChains = map[string]bool{"PREROUTING": true, "POSTROUTING": true}

// chainRef is a chain of a table.
type chainRef struct{ table, name string }

// filterChain is a chain of the filter table.
func filterChain(name string) chainRef { return chainRef{"filter", name} }

// apiChain is the API chain of a built-in chain imported, "" for any other.
func apiChain(ref chainRef) v1alpha1.Chain {
	if ref.table == "filter" {
		return builtinChains[ref.name]
	}
	if isPreRouting(ref) {
		return v1alpha1.ChainPreRouting
	}
	return ""
}

// importedTable reports whether some chains of a table are imported.
func importedTable(table string) bool {
	return table == "filter" || preRoutingTables[table]
}

// importedChains says which chains are imported, for warnings.
const importedChains = "only the filter table and the PREROUTING chains of raw and mangle are imported"

// ownedChainPrefixes name the chains other components manage.
var ownedChainPrefixes = []struct{ prefix, owner string }{
	{"KUBE-", "Kubernetes (kube-proxy, kubelet)"},
	{"FLANNEL-", "flannel"},
	{"cali-", "Calico"},
	{"DOCKER", "Docker"},
}

// chainOwner returns who manages a chain, or "" for a chain of the user.
// Docker's chains are DOCKER, DOCKER-USER, DOCKER-ISOLATION-STAGE-1 and
// the like.
func chainOwner(chain string) string {
	for _, o := range ownedChainPrefixes {
		if strings.HasPrefix(chain, o.prefix) {
			return o.owner
		}
	}
	return ""
}

// reportOwned reports an owned chain the first time it is met.
func (im *importer) reportOwned(line int, text, chain string) {
	if im.reportedChains[chain] {
		return
	}
	im.reportedChains[chain] = true
	im.warn(line, text, "chain %s belongs to %s: skipped", chain, chainOwner(chain))
}

// line handles one input line.
func (im *importer) line(n int, raw string) {
	text := strings.TrimSpace(raw)
	if text == "" || strings.HasPrefix(text, "#") {
		return
	}
	switch {
	case strings.HasPrefix(text, "*"):
		im.table = strings.TrimSpace(text[1:])
		if !importedTable(im.table) && !im.skippedTables[im.table] {
			im.skippedTables[im.table] = true
			im.warn(n, text, "table %s skipped: %s", im.table, importedChains)
		}
		return
	case text == "COMMIT":
		im.table = ""
		return
	}
	if im.table != "" && !importedTable(im.table) {
		// Covered by the table's warning.
		return
	}
	toks, err := tokenize(text)
	if err != nil {
		im.warn(n, text, "%v", err)
		return
	}
	if len(toks) == 0 {
		return
	}
	if strings.HasPrefix(text, ":") {
		im.declaration(n, text, toks)
		return
	}
	// iptables-save -c prefixes rules with their counters: [packets:bytes].
	if isCounters(toks[0]) {
		toks = toks[1:]
	}
	if len(toks) > 0 && toks[0] == "sudo" {
		toks = toks[1:]
	}
	if len(toks) > 0 && isIptablesCommand(toks[0]) {
		toks = toks[1:]
	}
	im.command(n, text, toks)
}

func isCounters(tok string) bool {
	if len(tok) < 5 || tok[0] != '[' || tok[len(tok)-1] != ']' {
		return false
	}
	a, b, ok := strings.Cut(tok[1:len(tok)-1], ":")
	return ok && isDigits(a) && isDigits(b)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isIptablesCommand(tok string) bool {
	if i := strings.LastIndexByte(tok, '/'); i >= 0 {
		tok = tok[i+1:]
	}
	switch tok {
	case "iptables", "iptables-legacy", "iptables-nft",
		"ip6tables", "ip6tables-legacy", "ip6tables-nft":
		return true
	}
	return false
}

// declaration handles an iptables-save chain line: `:CHAIN POLICY [p:b]`.
func (im *importer) declaration(n int, text string, toks []string) {
	chain := strings.TrimPrefix(toks[0], ":")
	policy := ""
	if len(toks) > 1 {
		policy = toks[1]
	}
	im.chainPolicy(n, text, im.sectionTable(), chain, policy, true)
}

// sectionTable is the table lines belong to unless they say otherwise.
func (im *importer) sectionTable() string {
	if im.table == "" {
		return "filter"
	}
	return im.table
}

// chainPolicy handles `:CHAIN POLICY` and `-P CHAIN POLICY` (declare is
// false for -P) of a chain of table.
func (im *importer) chainPolicy(n int, text, table, chain, policy string, declare bool) {
	if table != "filter" {
		im.otherTablePolicy(n, text, table, chain, policy, declare)
		return
	}
	if c, ok := builtinChains[chain]; ok {
		switch policy {
		case "ACCEPT":
			im.defaults.Set(c, v1alpha1.ChainPolicyAccept)
		case "DROP":
			im.defaults.Set(c, v1alpha1.ChainPolicyDrop)
			im.defaultLines[c] = Warning{Line: n, Text: text}
		case "":
			im.warn(n, text, "chain %s has no policy", chain)
		default:
			im.warn(n, text, "chain policy %s is not supported: only ACCEPT and DROP", policy)
		}
		return
	}
	switch {
	case chain == "":
		im.warn(n, text, "chain name missing")
	case chainOwner(chain) != "":
		im.reportOwned(n, text, chain)
	case otherTableChains[chain]:
		im.warn(n, text, "chain %s is not a filter table chain: only INPUT, FORWARD and OUTPUT are imported from it (PREROUTING from raw and mangle)", chain)
	case declare:
		if _, ok := im.declared[chain]; !ok {
			im.declared[chain] = Warning{Line: n, Text: text}
		}
	default:
		im.warn(n, text, "a user-defined chain has no policy: its packets return to the chain that jumped to it")
	}
}

// Command flags of iptables, long forms mapped to the short ones.
var commandFlags = map[string]string{
	"-A": "-A", "--append": "-A",
	"-I": "-I", "--insert": "-I",
	"-P": "-P", "--policy": "-P",
	"-N": "-N", "--new-chain": "-N", "--new": "-N",
	"-F": "-F", "--flush": "-F",
	"-D": "-D", "--delete": "-D",
	"-R": "-R", "--replace": "-R",
	"-X": "-X", "--delete-chain": "-X",
	"-Z": "-Z", "--zero": "-Z",
	"-E": "-E", "--rename-chain": "-E",
	"-L": "-L", "--list": "-L",
	"-S": "-S", "--list-rules": "-S",
	"-C": "-C", "--check": "-C",
}

// command handles one iptables command line (the program name removed).
func (im *importer) command(n int, text string, toks []string) {
	// Global options may come before the command.
	table := ""
	i := 0
	for i < len(toks) {
		switch toks[i] {
		case "-t", "--table":
			if i+1 < len(toks) {
				table = toks[i+1]
			}
			i += 2
			continue
		case "-w", "--wait":
			i++
			if i < len(toks) && isDigits(toks[i]) {
				i++
			}
			continue
		case "-W", "--wait-interval":
			i += 2
			continue
		case "-v", "--verbose", "-n", "--numeric", "-x", "--exact", "--line-numbers", "-4", "--ipv4", "-6", "--ipv6":
			i++
			continue
		}
		break
	}
	cmd := ""
	if i < len(toks) {
		cmd = commandFlags[toks[i]]
	}
	if cmd == "" {
		im.warn(n, text, "not an iptables rule or command")
		return
	}
	// The table may also come after the command.
	args := make([]string, 0, len(toks)-i)
	for j := i + 1; j < len(toks); j++ {
		if toks[j] == "-t" || toks[j] == "--table" {
			if j+1 >= len(toks) {
				im.warn(n, text, "option %s needs a table name", toks[j])
				return
			}
			table = toks[j+1]
			j++
			continue
		}
		args = append(args, toks[j])
	}
	if table == "" {
		table = im.sectionTable()
	}
	if !importedTable(table) {
		im.warn(n, text, "table %s skipped: %s", table, importedChains)
		return
	}
	chain := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") && args[0] != "!" {
		chain = args[0]
		args = args[1:]
	}

	switch cmd {
	case "-P":
		if chain == "" || len(args) == 0 {
			im.warn(n, text, "-P needs a chain and a policy")
			return
		}
		if len(args) > 1 {
			im.warn(n, text, "unexpected arguments after the policy")
			return
		}
		im.chainPolicy(n, text, table, chain, args[0], false)
	case "-N":
		if chain == "" {
			im.warn(n, text, "-N needs a chain name")
			return
		}
		im.chainPolicy(n, text, table, chain, "", true)
	case "-F":
		if len(args) > 0 {
			im.warn(n, text, "unexpected arguments after -F")
			return
		}
		if table != "filter" && chain != "" && chain != "PREROUTING" {
			im.warn(n, text, "flush of chain %s of table %s not imported: %s", chain, table, importedChains)
			return
		}
		im.forget(func(c chainRef) bool { return c.table == table && (chain == "" || c.name == chain) })
	case "-A", "-I":
		if chain == "" {
			im.warn(n, text, "%s needs a chain name", cmd)
			return
		}
		pos := 0 // -A appends
		if cmd == "-I" {
			pos = 1
			if len(args) > 0 && isDigits(args[0]) {
				p, err := parseUint(args[0], 1<<30)
				if err != nil || p == 0 {
					im.warn(n, text, "invalid rule number %s", args[0])
					return
				}
				pos = p
				args = args[1:]
			}
		}
		im.rule(n, text, table, chain, pos, args)
	default:
		im.warn(n, text, "command %s is not imported: only -A, -I, -P, -N and -F are", cmd)
	}
}

// forget drops the rules of the chains flush selects, as -F does; their
// lines no longer count.
func (im *importer) forget(flush func(chainRef) bool) {
	for c, list := range im.chains {
		if !flush(c) {
			continue
		}
		for _, e := range list {
			delete(im.status, e.line)
		}
		delete(im.chains, c)
	}
}

// rule records one -A (pos 0) or -I (pos >= 1) line of chain of table;
// build translates it.
func (im *importer) rule(n int, text, table, chain string, pos int, args []string) {
	ref := chainRef{table, chain}
	switch {
	case table != "filter" && !isPreRouting(ref):
		im.otherTableRule(n, text, table, chain)
		return
	case table == "filter" && otherTableChains[chain]:
		im.warn(n, text, "chain %s is not a filter table chain: only INPUT, FORWARD and OUTPUT are imported from it (PREROUTING from raw and mangle)", chain)
		return
	}
	list := im.chains[ref]
	if pos > len(list)+1 {
		im.warn(n, text, "rule number %d is past the end of chain %s (%d rules): iptables refuses it", pos, chain, len(list))
		return
	}
	e := entry{line: n, text: text, args: args}
	im.status[n] = statusUnused
	if pos == 0 {
		im.chains[ref] = append(list, e)
		return
	}
	list = append(list, entry{})
	copy(list[pos:], list[pos-1:])
	list[pos-1] = e
	im.chains[ref] = list
}

// rules names the translated rules and returns them chain by chain, in
// chain order, at most MaxPolicyRules.
func (im *importer) rules(emitted map[v1alpha1.Chain][]emittedRule) []v1alpha1.Rule {
	var out []v1alpha1.Rule
	used := map[string]bool{}
	for _, c := range v1alpha1.Chains {
		for _, e := range emitted[c] {
			if len(out) >= v1alpha1.MaxPolicyRules {
				im.warn(e.line, e.text, "policy already has %d rules, the most a policy may hold: split the ruleset", v1alpha1.MaxPolicyRules)
				im.mark(e.line, statusSkipped)
				continue
			}
			r := e.rule
			r.Name = uniqueName(baseName(&r, e.comment), used)
			out = append(out, r)
		}
	}
	return out
}
