package compile

import (
	"slices"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// ChainPriority is the priority of nodefw's base chains: filter + 10.
//
// Every table's base chains on a hook see each packet in priority order,
// and accept only ends the chain it is in, so an accept here can never
// override a drop in another table, nor theirs a drop here: the order
// decides only whose drop, reject or log comes first. iptables-nft's filter
// chains sit at filter (0), and so do kube-proxy's filter-input,
// filter-forward and filter-output chains in its own kube-proxy table in
// nftables mode (older releases used dstnat - 10, i.e. -110); between
// tables at equal priority the order is undefined. filter + 10 runs after
// both, deterministically, so Kubernetes' own rejects (services without
// endpoints) answer first. On the output hook it is also after DNAT
// (dstnat, -100), as iptables' filter OUTPUT is, so rules match translated
// addresses just as the iptables rules they replace did.
const ChainPriority int32 = 10

// Kernel limits: NF_LOG_PREFIXLEN and the nftables comment size both
// include the terminating NUL.
const (
	maxLogPrefix = 127
	maxComment   = 127
)

// ICMPv6 neighbour discovery (RFC 4861): router solicitation and
// advertisement, neighbour solicitation and advertisement, redirect.
// Without them IPv6 stops working within minutes.
var ndTypes = []uint8{133, 134, 135, 136, 137}

// Compile turns a node's resolved firewall into the ruleset its agent
// programs: the input, forward and output base chains, and the prerouting
// chain when the spec uses it (see prerouting.go), each with the implicit
// accepts, then the node's rules of that chain in order, then the chain
// policy. Runs of simple rules with the same action become lookups in sets
// (see runs.go); the first rule that matches a packet still decides. The
// result depends only on its arguments.
func Compile(spec v1alpha1.NodeFirewallSpec, opts Options) (*Ruleset, error) {
	byChain, err := validate(spec)
	if err != nil {
		return nil, err
	}
	if err := validateOptions(opts); err != nil {
		return nil, err
	}
	rs := &Ruleset{Table: opts.table()}
	scratch := &runScratch{merged: opts.MergedRunCounters}
	logs := &logBook{group: opts.logGroup()}
	for ci, c := range v1alpha1.Chains {
		if c == v1alpha1.ChainPreRouting && !usesPreRouting(spec, byChain[ci]) {
			continue
		}
		ch := Chain{
			Name:     chainName(c),
			Hook:     chainHook(c),
			Priority: chainPriority(c),
			Policy:   VerdictAccept,
			Rules:    implicitRules(c, opts),
		}
		b := chainBuilder{rs: rs, ch: &ch, minRun: opts.minRun(), exactMin: opts.exactSetMin(), scratch: scratch, logs: logs,
			meters: meterMaker{rs: rs, chain: ch.Name}}
		b.addRules(byChain[ci])
		addDefaultAction(&ch, c, spec, logs)
		rs.Chains = append(rs.Chains, ch)
	}
	rs.LogSources = logs.sources
	return rs, nil
}

// chainName is the nftables chain of an API chain.
func chainName(c v1alpha1.Chain) string {
	switch c {
	case v1alpha1.ChainInput:
		return ChainInput
	case v1alpha1.ChainForward:
		return ChainForward
	case v1alpha1.ChainOutput:
		return ChainOutput
	case v1alpha1.ChainPreRouting:
		return ChainPreRouting
	}
	return ""
}

func chainHook(c v1alpha1.Chain) Hook {
	switch c {
	case v1alpha1.ChainInput:
		return HookInput
	case v1alpha1.ChainForward:
		return HookForward
	case v1alpha1.ChainPreRouting:
		return HookPreRouting
	}
	return HookOutput
}

// chainPriority is the priority of a chain's base chain.
func chainPriority(c v1alpha1.Chain) int32 {
	if c == v1alpha1.ChainPreRouting {
		return PreRoutingPriority
	}
	return ChainPriority
}

// chainIndex is the index of a validated chain in v1alpha1.Chains.
func chainIndex(c v1alpha1.Chain) int { return slices.Index(v1alpha1.Chains, c) }

// implicitRules are the accepts every chain starts with, so that no policy
// can break established connections, local traffic, IPv6 or the failsafe
// ports. Only the failsafes count: the others match most traffic and tell
// nothing.
func implicitRules(c v1alpha1.Chain, opts Options) []Rule {
	rules := []Rule{{
		CtStates: CtStateEstablished | CtStateRelated,
		Verdict:  VerdictAccept,
		Comment:  "nodefw: established,related",
	}}
	var failsafes []Failsafe
	switch c {
	case v1alpha1.ChainPreRouting:
		// Input's accepts, once what is not addressed to the node is gone.
		rules = append(rules, notLocalRule(), Rule{IIfName: "lo", Verdict: VerdictAccept, Comment: "nodefw: loopback"})
		failsafes = opts.FailsafeInbound
	case v1alpha1.ChainInput:
		rules = append(rules, Rule{IIfName: "lo", Verdict: VerdictAccept, Comment: "nodefw: loopback"})
		failsafes = opts.FailsafeInbound
	case v1alpha1.ChainOutput:
		rules = append(rules, Rule{OIfName: "lo", Verdict: VerdictAccept, Comment: "nodefw: loopback"})
		failsafes = opts.FailsafeOutbound
	default:
		return rules
	}
	rules = append(rules, Rule{
		Family:    FamilyIPv6,
		L4Proto:   protoICMPv6,
		ICMPTypes: slices.Clone(ndTypes),
		Verdict:   VerdictAccept,
		Comment:   "nodefw: icmpv6 neighbour discovery",
	})
	return appendFailsafeRules(rules, failsafes)
}

// addDefaultAction ends a chain with the spec's default action: the drop
// policy, preceded by a rule that logs what it drops when the policy in
// force asks for it (logDrops), or, when the chain is audited, a rule that
// counts and logs what the policy would drop and drops nothing.
func addDefaultAction(ch *Chain, c v1alpha1.Chain, spec v1alpha1.NodeFirewallSpec, logs *logBook) {
	if spec.DefaultActions.For(c) != v1alpha1.ChainPolicyDrop {
		return
	}
	winner, _ := defaultPolicy(spec, c)
	src := LogSource{Policy: winner.Name, Rule: LogRuleDefault, Verdict: LogVerdictDrop, Chain: ch.Name}
	if !slices.Contains(spec.AuditedChains, c) {
		ch.Policy = VerdictDrop
		if winner.DefaultActions != nil && winner.DefaultActions.LogDrops {
			ch.Rules = append(ch.Rules, Rule{
				Log:     logs.log(src, 0, 0),
				Comment: "nodefw: log default-drop",
			})
		}
		return
	}
	src.Verdict = LogVerdictAudit
	ch.Rules = append(ch.Rules, Rule{
		Counter: true,
		Log:     logs.log(src, 0, 0),
		Comment: "nodefw: audit default-drop",
	})
}
