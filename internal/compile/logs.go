package compile

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// Logged packets go to an NFLOG group that the agent reads, rather than to
// the kernel log: the agent turns each into one JSON line naming the
// policy, rule and verdict. The kernel hands the agent only the rule's
// prefix, so the prefix names the rule compactly and Ruleset.LogSources
// maps it back (see LogPrefix).

// DefaultLogGroup is the NFLOG group of Options.LogGroup 0.
const DefaultLogGroup uint16 = 100

// Log rate of a rule that sets none, and of logged default actions: enough
// to see what a rule does without letting a flood reach the agent.
const (
	LogRatePerMinute = 10
	LogBurst         = 5
)

// Verdicts a log line names: the rule's action, or audit for a Drop or
// Reject of a policy in Audit mode.
const (
	LogVerdictAccept = "accept"
	LogVerdictDrop   = "drop"
	LogVerdictReject = "reject"
	LogVerdictAudit  = "audit"
)

// LogRuleDefault is the rule name of log lines of a chain's default action.
const LogRuleDefault = "default"

// LogSource is what a log prefix stands for.
type LogSource struct {
	Policy  string
	Rule    string
	Label   string
	Verdict string
	Chain   string
}

// logBook hands out log statements and remembers what each prefix stands for.
type logBook struct {
	group   uint16
	sources map[string]LogSource
}

// log returns the log statement of a source, rate-limited.
func (b *logBook) log(src LogSource, ratePerMinute, burst int32) *Log {
	prefix := LogPrefix(src)
	if b.sources == nil {
		b.sources = map[string]LogSource{}
	}
	b.sources[prefix] = src
	if ratePerMinute <= 0 {
		ratePerMinute = LogRatePerMinute
	}
	if burst <= 0 {
		burst = LogBurst
	}
	return &Log{Prefix: prefix, Group: b.group, RatePerMinute: uint32(ratePerMinute), Burst: uint32(burst)}
}

// LogPrefix is the prefix of a source's log rules: "nfw <verdict>
// <policy>/<rule>", or "nfw <verdict> <policy>:<chain>" for a default
// action (policy empty in a hand-written NodeFirewall), and
// when that is longer than the kernel's 127 bytes, "nfw <verdict> #<hash>"
// of the rest; a label follows after a space. ParseLogPrefix reads the first two forms back when the
// ruleset that wrote them is not known.
func LogPrefix(src LogSource) string {
	name := src.Policy
	if src.Rule == LogRuleDefault {
		name += ":" + src.Chain
	} else {
		name += "/" + src.Rule
	}
	if src.Label != "" {
		name += " " + src.Label
	}
	p := "nfw " + src.Verdict + " " + name
	if len(p) <= maxLogPrefix {
		return p
	}
	sum := sha256.Sum256([]byte(src.Chain + " " + name))
	return "nfw " + src.Verdict + " #" + hex.EncodeToString(sum[:12])
}

// ParseLogPrefix reads a prefix LogPrefix wrote without the ruleset:
// everything but the hashed form and the chain of a rule.
func ParseLogPrefix(prefix string) (LogSource, bool) {
	f := strings.Fields(prefix)
	if len(f) < 3 || len(f) > 4 || f[0] != "nfw" || strings.HasPrefix(f[2], "#") {
		return LogSource{}, false
	}
	verdict, name, label := f[1], f[2], ""
	if len(f) == 4 {
		label = f[3]
	}
	src := LogSource{Verdict: verdict, Label: label}
	if policy, rule, ok := strings.Cut(name, "/"); ok {
		src.Policy, src.Rule = policy, rule
		return src, true
	}
	policy, chain, ok := strings.Cut(name, ":")
	if !ok {
		return LogSource{}, false
	}
	src.Policy, src.Rule, src.Chain = policy, LogRuleDefault, chain
	return src, true
}

// ruleLogVerdict is the verdict a rule's log lines name.
func ruleLogVerdict(r parsedRule) string {
	switch {
	case r.Action == v1alpha1.ActionAccept:
		return LogVerdictAccept
	case r.Mode == v1alpha1.PolicyModeAudit:
		return LogVerdictAudit
	case r.Action == v1alpha1.ActionReject:
		return LogVerdictReject
	}
	return LogVerdictDrop
}

// defaultPolicy is the policy whose default action for c is in force: the
// first, in evaluation order, that sets one, as the controller resolves
// it; "" when the spec does not say (a hand-written NodeFirewall).
func defaultPolicy(spec v1alpha1.NodeFirewallSpec, c v1alpha1.Chain) (v1alpha1.PolicyReference, bool) {
	for _, p := range spec.Policies {
		if p.DefaultActions != nil && p.DefaultActions.For(c) != "" {
			return p, true
		}
	}
	return v1alpha1.PolicyReference{}, false
}

// validateLog checks the log settings of rule i.
func validateLog(path func() string, r *v1alpha1.NodeFirewallRule, fail func(path, format string, args ...any)) {
	if !r.Log && (r.LogLabel != "" || r.LogRatePerMinute != 0 || r.LogBurst != 0) {
		fail(path()+".log", "logLabel, logRatePerMinute and logBurst require log: true")
	}
	if r.LogLabel != "" && (len(r.LogLabel) > 32 || !isDNS1123Label(r.LogLabel)) {
		fail(path()+".logLabel", "%q is not a label of at most 32 lower-case letters, digits and '-'", r.LogLabel)
	}
	if r.LogRatePerMinute < 0 || r.LogRatePerMinute > 60000 {
		fail(path()+".logRatePerMinute", "%d is not between 1 and 60000", r.LogRatePerMinute)
	}
	if r.LogBurst < 0 || r.LogBurst > 10000 {
		fail(path()+".logBurst", "%d is not between 1 and 10000", r.LogBurst)
	}
}
