// Package importer translates an existing iptables ruleset, as printed by
// `iptables-save` or `iptables -S` or typed as `iptables -A/-I` commands,
// into a NodeFirewallPolicy.
//
// The filter table's INPUT, FORWARD and OUTPUT chains become rules of the
// chains of those names, and the PREROUTING chains of the raw and mangle
// tables rules of the PreRouting chain (see prerouting.go). Chains that
// belong to Kubernetes (KUBE-*), flannel (FLANNEL-*) and Calico (cali-*)
// are left to their owners and reported once each. A rule is either
// translated exactly or not at all: every line that cannot be translated is
// reported as a Warning with its line number, never dropped silently.
package importer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
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
}

// Warning reports one input line that was not translated, or was translated
// with a caveat.
type Warning struct {
	// Line is the 1-based line number in the input (the first line of a
	// line continued with a trailing backslash).
	Line int
	// Text is the line as read, without surrounding blanks.
	Text string
	// Reason says why the line was not translated, or what to check.
	Reason string
}

func (w Warning) String() string {
	return fmt.Sprintf("line %d: %s (%s)", w.Line, w.Reason, w.Text)
}

// Result is an imported policy and what could not be imported.
type Result struct {
	Policy   *v1alpha1.NodeFirewallPolicy
	Warnings []Warning
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
			Rules:        im.rules(),
		},
	}
	if im.defaults != (v1alpha1.DefaultActions{}) {
		d := im.defaults
		policy.Spec.DefaultActions = &d
	}
	im.warnImplicitAccepts()
	im.warnPreRoutingScope()
	sort.SliceStable(im.warnings, func(i, j int) bool { return im.warnings[i].Line < im.warnings[j].Line })
	return &Result{Policy: policy, Warnings: im.warnings}, nil
}

// warnImplicitAccepts reports chains whose drops nodefw does not reproduce
// exactly: nodefw accepts established and related connections, loopback,
// ICMPv6 neighbour discovery and the failsafe ports before any rule, so a
// chain that drops without first accepting ESTABLISHED,RELATED behaves
// differently (replies to the node's own connections, for one, pass).
func (im *importer) warnImplicitAccepts() {
	for _, c := range v1alpha1.Chains {
		var first *Warning
		if im.defaults.For(c) == v1alpha1.ChainPolicyDrop {
			w := im.defaultLines[c]
			first = &w
		}
		for _, e := range im.entries(c) {
			if e.rule == nil {
				continue
			}
			if acceptsEstablished(e.rule) {
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
			im.warn(first.Line, first.Text, "%s drops without first accepting ESTABLISHED,RELATED: nodefw accepts established and related connections, loopback, ICMPv6 neighbour discovery and the failsafe ports before any rule, so some traffic dropped here will pass", strings.ToUpper(string(c)))
		}
	}
}

// acceptsEstablished reports whether r is the usual `-m conntrack --ctstate
// ESTABLISHED,RELATED -j ACCEPT` with no other match.
func acceptsEstablished(r *v1alpha1.Rule) bool {
	if r.Action != v1alpha1.ActionAccept || r.Protocol != "" || len(r.Ports) > 0 || len(r.Sources) > 0 || len(r.Destinations) > 0 || r.InInterface != "" || r.OutInterface != "" {
		return false
	}
	est, rel := false, false
	for _, s := range r.States {
		est = est || s == v1alpha1.ConnStateEstablished
		rel = rel || s == v1alpha1.ConnStateRelated
	}
	return est && rel
}

// entry is one rule of a built-in chain, in chain order. A nil rule holds
// the place of a rule that was not translated, so that `-I CHAIN n`
// positions count it as iptables does.
type entry struct {
	rule    *v1alpha1.Rule
	comment string
	line    int
	text    string
	// localOnly says a PREROUTING rule matched only packets addressed to
	// the node (-m addrtype --dst-type LOCAL), as nodefw's PreRouting does.
	localOnly bool
	// notLocalAccept holds the place of PREROUTING's `-m addrtype !
	// --dst-type LOCAL -j ACCEPT`, which is not a rule of the policy.
	notLocalAccept bool
}

type importer struct {
	warnings []Warning
	// chains are the rules of each built-in chain imported, by table and
	// chain (PREROUTING is in raw and mangle).
	chains   map[tableChain][]entry
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
	// preRoutingDropLine is where a raw or mangle PREROUTING policy was
	// set to DROP, if one was.
	preRoutingDropLine *Warning
}

func newImporter() *importer {
	return &importer{
		chains:         map[tableChain][]entry{},
		defaultLines:   map[v1alpha1.Chain]Warning{},
		skippedTables:  map[string]bool{},
		reportedChains: map[string]bool{},
	}
}

func (im *importer) warn(line int, text, format string, args ...any) {
	im.warnings = append(im.warnings, Warning{Line: line, Text: text, Reason: fmt.Sprintf(format, args...)})
}

// tableChain is a built-in chain of a table that is imported.
type tableChain struct {
	table string
	chain v1alpha1.Chain
}

// builtinChains maps the built-in chains that are imported, by table, to
// API chains.
var builtinChains = map[string]map[string]v1alpha1.Chain{
	"filter": {
		"INPUT":   v1alpha1.ChainInput,
		"FORWARD": v1alpha1.ChainForward,
		"OUTPUT":  v1alpha1.ChainOutput,
	},
	"raw":    {"PREROUTING": v1alpha1.ChainPreRouting},
	"mangle": {"PREROUTING": v1alpha1.ChainPreRouting},
}

// otherTableChains are built-in chains of the nat, mangle and raw tables.
var otherTableChains = map[string]bool{"PREROUTING": true, "POSTROUTING": true}

// builtinChain returns the API chain of a built-in chain of table, and
// whether it is imported.
func builtinChain(table, chain string) (v1alpha1.Chain, bool) {
	c, ok := builtinChains[table][chain]
	return c, ok
}

// importedTable reports whether some chains of a table are imported.
func importedTable(table string) bool { return builtinChains[table] != nil }

// entries are the imported rules of an API chain, in evaluation order:
// raw's PREROUTING before mangle's.
func (im *importer) entries(c v1alpha1.Chain) []entry {
	if c != v1alpha1.ChainPreRouting {
		return im.chains[tableChain{"filter", c}]
	}
	return slices.Concat(im.chains[tableChain{"raw", c}], im.chains[tableChain{"mangle", c}])
}

// ownedChainPrefixes name the chains other components manage.
var ownedChainPrefixes = []struct{ prefix, owner string }{
	{"KUBE-", "Kubernetes (kube-proxy, kubelet)"},
	{"FLANNEL-", "flannel"},
	{"cali-", "Calico"},
}

// chainOwner returns who manages a chain, or "" for a chain of the user.
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

// importedChains says which chains are imported, for warnings.
const importedChains = "only the filter table and the PREROUTING chains of raw and mangle are imported"

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
// false for -P) in table.
func (im *importer) chainPolicy(n int, text, table, chain, policy string, declare bool) {
	if c, ok := builtinChain(table, chain); ok {
		switch policy {
		case "ACCEPT":
			if im.defaults.For(c) == "" {
				im.defaults.Set(c, v1alpha1.ChainPolicyAccept)
			}
		case "DROP":
			// A packet passes PREROUTING only if raw and mangle both let
			// it: a DROP in either is the chain's.
			im.defaults.Set(c, v1alpha1.ChainPolicyDrop)
			im.defaultLines[c] = Warning{Line: n, Text: text}
			if c == v1alpha1.ChainPreRouting {
				im.preRoutingDropLine = &Warning{Line: n, Text: text}
			}
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
	case table != "filter" && !isBuiltin(table, chain):
		im.warn(n, text, "user-defined chain %s of table %s is not imported: %s", chain, table, importedChains)
	case table != "filter" && policy == "ACCEPT":
		// A built-in chain of raw or mangle that lets everything through.
	case table != "filter":
		im.warn(n, text, "policy %s of chain %s of table %s is not imported: %s", policy, chain, table, importedChains)
	case otherTableChains[chain]:
		im.warn(n, text, "chain %s is not a filter table chain: only INPUT, FORWARD and OUTPUT are imported from it (PREROUTING from raw and mangle)", chain)
	case declare:
		im.warn(n, text, "user-defined chain %s is not imported: only INPUT, FORWARD and OUTPUT are", chain)
	default:
		im.warn(n, text, "policy of user-defined chain %s is not imported", chain)
	}
}

// isBuiltin reports whether chain is a built-in chain of the raw or mangle
// table.
func isBuiltin(table, chain string) bool {
	switch chain {
	case "PREROUTING", "OUTPUT":
		return true
	case "INPUT", "FORWARD", "POSTROUTING":
		return table == "mangle"
	}
	return false
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
		if chain == "" {
			for k := range im.chains {
				if k.table == table {
					delete(im.chains, k)
				}
			}
			return
		}
		if c, ok := builtinChain(table, chain); ok {
			delete(im.chains, tableChain{table, c})
			return
		}
		im.warn(n, text, "flush of chain %s of table %s not imported: %s", chain, table, importedChains)
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

// rule translates one -A (pos 0) or -I (pos >= 1) line of table.
func (im *importer) rule(n int, text, table, chain string, pos int, args []string) {
	c, builtin := builtinChain(table, chain)
	if !builtin {
		switch {
		case chainOwner(chain) != "":
			im.reportOwned(n, text, chain)
		case table != "filter" && isBuiltin(table, chain):
			im.warn(n, text, "chain %s of table %s is not imported: %s", chain, table, importedChains)
		case table != "filter":
			im.warn(n, text, "rule in user-defined chain %s of table %s not imported: %s", chain, table, importedChains)
		case otherTableChains[chain]:
			im.warn(n, text, "chain %s is not a filter table chain: only INPUT, FORWARD and OUTPUT are imported from it (PREROUTING from raw and mangle)", chain)
		default:
			im.warn(n, text, "rule in user-defined chain %s not imported: only INPUT, FORWARD and OUTPUT are", chain)
		}
		return
	}

	key := tableChain{table, c}
	list := im.chains[key]
	if pos > len(list)+1 {
		im.warn(n, text, "rule number %d is past the end of chain %s (%d rules): iptables refuses it", pos, chain, len(list))
		return
	}
	e := entry{line: n, text: text}
	tr := translate(table, c, args)
	switch {
	case tr.ownedJump != "":
		im.reportedChains[tr.ownedJump] = true
		im.warn(n, text, "jump to chain %s skipped: it belongs to %s", tr.ownedJump, chainOwner(tr.ownedJump))
	case tr.err != "":
		im.warn(n, text, "%s", tr.err)
	case tr.notLocalAccept:
		e.notLocalAccept = true
		im.warn(n, text, "not imported as a rule: nodefw's PreRouting chain lets packets not addressed to the node go before any rule")
	default:
		e.rule = tr.rule
		e.comment = tr.comment
		e.localOnly = tr.localOnly
		for _, note := range tr.notes {
			im.warn(n, text, "%s", note)
		}
	}
	if pos == 0 {
		im.chains[key] = append(list, e)
		return
	}
	list = append(list, entry{})
	copy(list[pos:], list[pos-1:])
	list[pos-1] = e
	im.chains[key] = list
}

// rules names the translated rules and returns them chain by chain, in
// chain order, at most MaxPolicyRules.
func (im *importer) rules() []v1alpha1.Rule {
	var out []v1alpha1.Rule
	used := map[string]bool{}
	for _, c := range v1alpha1.Chains {
		for _, e := range im.entries(c) {
			if e.rule == nil {
				continue
			}
			if len(out) >= v1alpha1.MaxPolicyRules {
				im.warn(e.line, e.text, "policy already has %d rules, the most a policy may hold: split the ruleset", v1alpha1.MaxPolicyRules)
				continue
			}
			r := *e.rule
			r.Name = uniqueName(baseName(&r, e.comment), used)
			out = append(out, r)
		}
	}
	return out
}
