package diff

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// probe is one connection attempt, or one IP message, made the same way
// on both sides.
type probe struct {
	chain v1alpha1.Chain
	// proto is TCP or UDP, or "" for msg: an ICMP or ICMPv6 message or a
	// packet of another IP protocol, received by a raw socket of to.
	proto    v1alpha1.Protocol
	msg      netnstest.IPMessage
	from, to endpoint
	src, dst netip.Addr
	port     uint16
	// sport is the source port, 0 for an ephemeral one.
	sport uint16
}

func (p probe) String() string {
	if p.proto == "" {
		return fmt.Sprintf("%s %v %s -> %s", p.chain, p.msg, p.src, p.dst)
	}
	src := p.src.String()
	if p.sport != 0 {
		src = netip.AddrPortFrom(p.src, p.sport).String()
	}
	return fmt.Sprintf("%s %s %s -> %s", p.chain, strings.ToLower(string(p.proto)), src, netip.AddrPortFrom(p.dst, p.port))
}

// pair is a source and destination of a probe.
type pair struct {
	chain    v1alpha1.Chain
	from, to endpoint
	src, dst netip.Addr
}

// pairs are the sources and destinations probed, in every chain: client to
// router (Input), client to server and server to client (Forward), router
// to client and server (Output, dialled inside the router from either of
// its addresses).
func pairs(v6 bool) []pair {
	var out []pair
	add := func(c v1alpha1.Chain, from endpoint, srcs, dsts []netip.Addr) {
		for _, s := range srcs {
			for _, d := range dsts {
				out = append(out, pair{chain: c, from: from, to: endpointOf(d), src: s, dst: d})
			}
		}
	}
	add(v1alpha1.ChainInput, client, clientV4, []netip.Addr{routerClientV4, routerServerV4})
	add(v1alpha1.ChainForward, client, clientV4, serverV4)
	add(v1alpha1.ChainForward, server, serverV4[:1], mustAddrs("10.77.1.10", "10.77.1.13"))
	add(v1alpha1.ChainOutput, router, []netip.Addr{routerClientV4, routerServerV4},
		mustAddrs("10.77.1.10", "10.77.1.13", "10.244.1.10", "10.77.2.10", "10.77.2.20"))
	if v6 {
		add(v1alpha1.ChainInput, client, clientV6, []netip.Addr{routerClientV6, routerServerV6})
		add(v1alpha1.ChainForward, client, clientV6, serverV6)
		add(v1alpha1.ChainForward, server, serverV6, clientV6[:1])
		add(v1alpha1.ChainOutput, router, []netip.Addr{routerClientV6}, clientV6[:1])
		add(v1alpha1.ChainOutput, router, []netip.Addr{routerServerV6}, serverV6)
	}
	return out
}

// matrix is every pair with every port, over TCP and UDP.
func matrix(ps []pair, tcpPorts, udpPorts []uint16) []probe {
	var out []probe
	for _, p := range ps {
		for _, pr := range []struct {
			proto v1alpha1.Protocol
			ports []uint16
		}{{v1alpha1.ProtocolTCP, tcpPorts}, {v1alpha1.ProtocolUDP, udpPorts}} {
			for _, port := range pr.ports {
				out = append(out, probe{chain: p.chain, proto: pr.proto, from: p.from, to: p.to, src: p.src, dst: p.dst, port: port})
			}
		}
	}
	return out
}

// endpointOf is the namespace that owns an address of the probes.
func endpointOf(a netip.Addr) endpoint {
	switch {
	case slices.Contains(clientV4, a), slices.Contains(clientV6, a):
		return client
	case slices.Contains(serverV4, a), slices.Contains(serverV6, a):
		return server
	}
	return router
}

// sourcePortMatrix is every pair with every source port and destination
// port, over TCP and UDP.
func sourcePortMatrix(ps []pair, sports, dports []uint16) []probe {
	var out []probe
	for _, p := range ps {
		for _, proto := range []v1alpha1.Protocol{v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP} {
			for _, sport := range sports {
				for _, port := range dports {
					out = append(out, probe{chain: p.chain, proto: proto, from: p.from, to: p.to, src: p.src, dst: p.dst, port: port, sport: sport})
				}
			}
		}
	}
	return out
}

// messageMatrix is every pair with every IP message of its family.
func messageMatrix(ps []pair, msgs []netnstest.IPMessage) []probe {
	var out []probe
	for _, p := range ps {
		for _, m := range msgs {
			if (m.Protocol == netnstest.ProtoICMP && !p.dst.Is4()) || (m.Protocol == netnstest.ProtoICMPv6 && !p.dst.Is6()) {
				continue
			}
			out = append(out, probe{chain: p.chain, msg: m, from: p.from, to: p.to, src: p.src, dst: p.dst})
		}
	}
	return out
}

// run sends one probe on one side.
func (s *side) run(p probe, timeout time.Duration) (netnstest.Verdict, error) {
	opts := []netnstest.ProbeOption{netnstest.WithSource(p.src), netnstest.WithTimeout(timeout)}
	if p.sport != 0 {
		opts = append(opts, netnstest.WithSourcePort(p.sport))
	}
	switch p.proto {
	case "":
		return netnstest.ProbeIP(s.ns(p.from), s.ns(p.to), p.dst, p.msg, opts...)
	case v1alpha1.ProtocolTCP:
		return netnstest.ProbeTCP(s.ns(p.from), p.dst, p.port, opts...)
	}
	return netnstest.ProbeUDP(s.ns(p.from), p.dst, p.port, opts...)
}

// result is a probe's verdict on both sides, and the verdict the trace
// of its first packet foretells.
type result struct {
	probe
	ipt, nfw, trace netnstest.Verdict
}

func (r result) String() string {
	return fmt.Sprintf("%v: iptables %v, nodefw %v, trace %v", r.probe, r.ipt, r.nfw, r.trace)
}

// runAll sends every probe on both sides, in parallel, in rounds whose
// probes share no conntrack entry, each round after a conntrack flush.
func (t *topology) runAll(probes []probe, timeout time.Duration) ([]result, error) {
	results := make([]result, len(probes))
	for i, p := range probes {
		results[i].probe = p
	}
	var ran []result
	for _, round := range rounds(probes) {
		next := make([]probe, len(round))
		for i, j := range round {
			next[i] = probes[j]
		}
		if err := t.forget(ran, next); err != nil {
			return nil, err
		}
		rs, err := t.runRound(next, timeout)
		if err != nil {
			return nil, err
		}
		for i, j := range round {
			results[j] = rs[i]
		}
		ran = append(ran, rs...)
	}
	return results, nil
}

// runRound sends every probe on both sides, in parallel.
func (t *topology) runRound(probes []probe, timeout time.Duration) ([]result, error) {
	results := make([]result, len(probes))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, p := range probes {
		results[i].probe = p
	}
	// Both sides at once, each with its own limit.
	for _, s := range []*side{t.ipt, t.nfw} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem := make(chan struct{}, max(*parallelFlag, 1))
			var inner sync.WaitGroup
			for i, p := range probes {
				inner.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; inner.Done() }()
					v, err := s.run(p, timeout)
					if err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("%s: %v: %w", s.name, p, err))
						mu.Unlock()
						return
					}
					if s == t.ipt {
						results[i].ipt = v
					} else {
						results[i].nfw = v
					}
				}()
			}
			inner.Wait()
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, fmt.Errorf("%d probes failed, first: %w", len(errs), errs[0])
	}
	return results, nil
}

// settled is a side's verdict for a probe sent again with a long timeout:
// the same verdict twice, or the majority of three.
func (s *side) settled(p probe) (netnstest.Verdict, error) {
	var vs []netnstest.Verdict
	for len(vs) < 3 {
		v, err := s.run(p, *confirmFlag)
		if err != nil {
			return 0, err
		}
		if slices.Contains(vs, v) {
			return v, nil
		}
		vs = append(vs, v)
	}
	return vs[0], nil
}

// confirm probes a result again on both sides with the long timeout, so
// that a slow answer is not taken for a drop. It reports whether the sides
// still differ, and the settled verdicts.
func (t *topology) confirm(p probe) (result, bool, error) {
	r := result{probe: p}
	var err1, err2 error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.ipt, err1 = t.ipt.settled(p) }()
	go func() { defer wg.Done(); r.nfw, err2 = t.nfw.settled(p) }()
	wg.Wait()
	if err1 != nil {
		return r, false, err1
	}
	if err2 != nil {
		return r, false, err2
	}
	return r, r.ipt != r.nfw, nil
}

// confirmAll confirms suspects and returns their settled verdicts, in the
// suspects' order. The suspects run in parallel, in rounds whose probes
// share no conntrack entry, each round after a conntrack flush that
// forgets what the probes before, those of the first run (before)
// included, left.
func (t *topology) confirmAll(suspects []probe, before []result) ([]result, error) {
	settled := make([]result, len(suspects))
	ran := before
	for _, round := range rounds(suspects) {
		next := make([]probe, len(round))
		for i, j := range round {
			next[i] = suspects[j]
		}
		if err := t.forget(ran, next); err != nil {
			return nil, err
		}
		rs, err := t.confirmRound(next)
		if err != nil {
			return nil, err
		}
		for i, j := range round {
			settled[j] = rs[i]
		}
		ran = slices.Concat(ran, rs)
	}
	return settled, nil
}

// confirmRound confirms suspects in parallel and returns their settled
// verdicts, in the suspects' order.
func (t *topology) confirmRound(suspects []probe) ([]result, error) {
	type outcome struct {
		r   result
		err error
	}
	out := make([]outcome, len(suspects))
	sem := make(chan struct{}, max(*parallelFlag/2, 1))
	var wg sync.WaitGroup
	for i, p := range suspects {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i].r, _, out[i].err = t.confirm(p)
		}()
	}
	wg.Wait()
	settled := make([]result, len(out))
	for i, o := range out {
		if o.err != nil {
			return nil, fmt.Errorf("%v: %w", suspects[i], o.err)
		}
		settled[i] = o.r
	}
	return settled, nil
}

// stats sums up a test's work.
type stats struct {
	mu           sync.Mutex
	sets         int // rule sets loaded and probed
	loadFailures int // rule sets a side failed to load
	probes       int
	mismatches   int
	// disagreements are probes whose trace foretold another verdict than
	// the kernel gave.
	disagreements int
	shrunk        int // rule sets shrunk, or that asked to be
}

func (s *stats) String() string {
	return fmt.Sprintf("rule sets probed: %d, failed to load: %d, probes on each side: %d, mismatches: %d, trace disagreements: %d",
		s.sets, s.loadFailures, s.probes, s.mismatches, s.disagreements)
}

func (s *stats) add(probes, mismatches, disagreements int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sets++
	s.probes += probes
	s.mismatches += mismatches
	s.disagreements += disagreements
}

// check loads a rule set into both routers, sends the probes and reports
// every probe whose verdicts differ, with both renderings of the rule set,
// then shrinks the rule set to a minimal reproducer. A mismatch fails the
// test unless the case is excused, when it is only logged. A rule set that
// a side fails to load fails the test, shrunk likewise. It returns the
// probes' results, nil when the rule set did not load.
func (t *topology) check(tb testing.TB, c *ruleCase, probes []probe, st *stats) []result {
	tb.Helper()
	if err := t.load(c); err != nil {
		st.mu.Lock()
		st.loadFailures++
		st.mu.Unlock()
		tb.Errorf("%s: loading:\n%s\n%v", c.name, describe(c), err)
		if c.derived && st.startShrink() {
			small, err := t.shrinkLoad(c, err)
			tb.Errorf("%s: minimal rule set that fails to load:\n%s\n%v", c.name, describe(small), err)
		}
		return nil
	}
	results, err := t.runAll(probes, *timeoutFlag)
	if err != nil {
		tb.Fatalf("%s: %v", c.name, err)
	}
	var suspects []probe
	for i, r := range results {
		results[i].trace = traceVerdict(c.spec, c.addressSets, r.probe)
		if r.ipt != r.nfw || r.ipt != results[i].trace || r.nfw != results[i].trace {
			suspects = append(suspects, r.probe)
		}
	}
	var confirmed, disagreements []result
	if len(suspects) > 0 {
		settled, err := t.confirmAll(suspects, results)
		if err != nil {
			tb.Fatalf("%s: %v", c.name, err)
		}
		for _, r := range settled {
			r.trace = traceVerdict(c.spec, c.addressSets, r.probe)
			if r.ipt != r.nfw {
				confirmed = append(confirmed, r)
			}
			// The agent's table is the rule set compiled: the trace must
			// foretell its verdicts always, and those of the iptables
			// rendering unless that is excused from matching the rule set.
			if r.trace != r.nfw || (r.trace != r.ipt && c.excused == "") {
				disagreements = append(disagreements, r)
			}
		}
	}
	st.add(len(probes), len(confirmed), len(disagreements))
	t.reportDisagreements(tb, c, disagreements, len(probes))
	if len(confirmed) == 0 {
		return results
	}
	report := tb.Errorf
	if c.excused != "" {
		report = tb.Logf
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d of %d probes get different verdicts", c.name, len(confirmed), len(probes))
	if c.excused != "" {
		fmt.Fprintf(&b, " (excused: %s)", c.excused)
	}
	b.WriteString(":\n")
	for i, r := range confirmed {
		if i == 20 {
			fmt.Fprintf(&b, "  ... and %d more\n", len(confirmed)-i)
			break
		}
		fmt.Fprintf(&b, "  %v\n", r)
	}
	b.WriteString(describe(c))
	report("%s", b.String())

	if c.derived && c.excused == "" && st.startShrink() {
		small, r := t.shrink(tb, c, confirmed[0].probe)
		report("%s: minimal reproducer of %v:\n%s", c.name, r, describe(small))
	}
	return results
}

// reportDisagreements fails the test with the probes whose trace
// foretold another verdict than the kernel gave, the rule set, and the
// first such probe's trace.
func (t *topology) reportDisagreements(tb testing.TB, c *ruleCase, disagreements []result, probes int) {
	tb.Helper()
	if len(disagreements) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: the trace foretells another verdict than the kernel gives for %d of %d probes:\n", c.name, len(disagreements), probes)
	for i, r := range disagreements {
		if i == 20 {
			fmt.Fprintf(&b, "  ... and %d more\n", len(disagreements)-i)
			break
		}
		fmt.Fprintf(&b, "  %v\n", r)
	}
	b.WriteString(describe(c))
	fmt.Fprintf(&b, "--- nodefw trace of %v\n%s", disagreements[0].probe, describeTrace(c.spec, c.addressSets, disagreements[0].probe))
	tb.Errorf("%s", b.String())
}

// startShrink reports whether another rule set may be shrunk.
func (s *stats) startShrink() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shrunk++
	return s.shrunk <= *shrinkFlag
}

// describe prints a rule set as YAML and in both renderings.
func describe(c *ruleCase) string {
	var b strings.Builder
	y, err := yaml.Marshal(c.spec)
	if err != nil {
		y = []byte(err.Error())
	}
	fmt.Fprintf(&b, "--- rule set (NodeFirewallSpec)\n%s", y)
	fmt.Fprintf(&b, "--- iptables-nft-restore\n%s", c.v4)
	fmt.Fprintf(&b, "--- ip6tables-nft-restore\n%s", c.v6)
	if c.ipset != "" {
		fmt.Fprintf(&b, "--- ipset restore\n%s", c.ipset)
	}
	if rs, err := compile.Compile(c.spec, c.options()); err != nil {
		fmt.Fprintf(&b, "--- compile: %v\n", err)
	} else {
		fmt.Fprintf(&b, "--- nodefw (compile.Render, set lookups %v, exact sets %v)\n%s", c.setLookups, c.exactSets, compile.Render(rs))
	}
	return b.String()
}

// shrinkBudget bounds the time spent shrinking one rule set.
const shrinkBudget = 2 * time.Minute

// shrink removes rules and simplifies the rest, default actions included,
// as long as the probe still gets different verdicts, and returns the
// smallest rule set found with the probe's verdicts under it.
func (t *topology) shrink(tb testing.TB, c *ruleCase, p probe) (*ruleCase, result) {
	tb.Helper()
	deadline := time.Now().Add(shrinkBudget)
	cur, last := c, result{probe: p}
	still := func(spec v1alpha1.NodeFirewallSpec) bool {
		cand := newPeersRuleCase(c.name+" (shrunk)", spec, c.addressSets)
		if err := t.load(cand); err != nil {
			tb.Logf("shrinking %s: %v", c.name, err)
			return false
		}
		// A quick look first: most candidates lose the difference.
		rs, err := t.runAll([]probe{p}, *timeoutFlag)
		if err != nil || rs[0].ipt == rs[0].nfw {
			return false
		}
		r, differ, err := t.confirm(p)
		if err != nil {
			tb.Logf("shrinking %s: %v", c.name, err)
			return false
		}
		r.trace = traceVerdict(spec, c.addressSets, p)
		if differ {
			cur, last = cand, r
		}
		return differ
	}
	if !still(c.spec) {
		tb.Logf("%s: %v no longer differs when loaded alone", c.name, p)
		return c, last
	}
	for progress := true; progress && time.Now().Before(deadline); {
		progress = false
		for _, cand := range simplifications(cur.spec, p.chain) {
			if time.Now().After(deadline) {
				tb.Logf("%s: shrinking stopped after %v", c.name, shrinkBudget)
				break
			}
			if still(cand) {
				progress = true
				break
			}
		}
	}
	return cur, last
}

// shrinkLoad simplifies a rule set that one side fails to load as long as
// that side still fails, and returns the smallest one found and its error.
func (t *topology) shrinkLoad(c *ruleCase, loadErr error) (*ruleCase, error) {
	sig := errorSignature(loadErr)
	cur, curErr := c, loadErr
	deadline := time.Now().Add(shrinkBudget)
	for progress := true; progress && time.Now().Before(deadline); {
		progress = false
		for _, spec := range simplifications(cur.spec, "") {
			cand := newPeersRuleCase(c.name+" (shrunk)", spec, c.addressSets)
			if err := t.load(cand); err != nil && errorSignature(err) == sig {
				cur, curErr, progress = cand, err, true
				break
			}
		}
	}
	return cur, curErr
}

// errorSignature is what stays of a load error when names, numbers and
// addresses change: the side that failed and the words of the innermost
// message.
func errorSignature(err error) string {
	msg := err.Error()
	who, _, _ := strings.Cut(msg, ":")
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	words := []string{who}
	for _, w := range strings.Fields(msg) {
		if strings.Trim(w, "abcdefghijklmnopqrstuvwxyz'") == "" {
			words = append(words, w)
		}
	}
	return strings.Join(words, " ")
}

// simplifications are the specs one step simpler than spec: the rules of
// chains other than chain removed (unless chain is ""), a rule removed, a
// default action relaxed, or one field of a rule cleared.
func simplifications(spec v1alpha1.NodeFirewallSpec, chain v1alpha1.Chain) []v1alpha1.NodeFirewallSpec {
	var out []v1alpha1.NodeFirewallSpec
	clone := func() v1alpha1.NodeFirewallSpec { return *spec.DeepCopy() }
	if chain != "" && slices.ContainsFunc(spec.Rules, func(r v1alpha1.NodeFirewallRule) bool { return r.Chain != chain }) {
		s := clone()
		s.Rules = slices.DeleteFunc(s.Rules, func(r v1alpha1.NodeFirewallRule) bool { return r.Chain != chain })
		out = append(out, s)
	}
	for i := range spec.Rules {
		s := clone()
		s.Rules = slices.Delete(s.Rules, i, i+1)
		out = append(out, s)
	}
	for _, ch := range v1alpha1.Chains {
		if spec.DefaultActions.For(ch) == v1alpha1.ChainPolicyDrop {
			s := clone()
			s.DefaultActions.Set(ch, v1alpha1.ChainPolicyAccept)
			s.AuditedChains = slices.DeleteFunc(s.AuditedChains, func(c v1alpha1.Chain) bool { return c == ch })
			out = append(out, s)
		}
	}
	for i, r := range spec.Rules {
		edits := []struct {
			applies bool
			edit    func(r *v1alpha1.NodeFirewallRule)
		}{
			{r.Log, func(r *v1alpha1.NodeFirewallRule) { r.Log = false }},
			{r.Limit != nil, func(r *v1alpha1.NodeFirewallRule) { r.Limit = nil }},
			{r.ConnLimit != nil, func(r *v1alpha1.NodeFirewallRule) { r.ConnLimit = nil }},
			{r.RejectWith != "", func(r *v1alpha1.NodeFirewallRule) { r.RejectWith = "" }},
			{len(r.SourcePorts) > 1, func(r *v1alpha1.NodeFirewallRule) { r.SourcePorts = r.SourcePorts[1:] }},
			{len(r.SourcePorts) > 0, func(r *v1alpha1.NodeFirewallRule) { r.SourcePorts = nil }},
			{len(r.ICMPTypes) > 1, func(r *v1alpha1.NodeFirewallRule) { r.ICMPTypes = r.ICMPTypes[1:] }},
			{len(r.ICMPTypes) > 0, func(r *v1alpha1.NodeFirewallRule) { r.ICMPTypes = nil }},
			{r.Mode == v1alpha1.PolicyModeAudit, func(r *v1alpha1.NodeFirewallRule) { r.Mode, r.Policy = v1alpha1.PolicyModeEnforce, "diff" }},
			{len(r.States) > 0, func(r *v1alpha1.NodeFirewallRule) { r.States = nil }},
			{len(r.Sources) > 1, func(r *v1alpha1.NodeFirewallRule) { r.Sources = r.Sources[1:] }},
			{len(r.Sources) > 0, func(r *v1alpha1.NodeFirewallRule) { r.Sources = nil }},
			{len(r.Destinations) > 1, func(r *v1alpha1.NodeFirewallRule) { r.Destinations = r.Destinations[1:] }},
			{len(r.Destinations) > 0, func(r *v1alpha1.NodeFirewallRule) { r.Destinations = nil }},
			{len(r.Ports) > 1, func(r *v1alpha1.NodeFirewallRule) { r.Ports = r.Ports[1:] }},
			{len(r.Ports) > 0, func(r *v1alpha1.NodeFirewallRule) { r.Ports = nil }},
			{r.InInterface != "", func(r *v1alpha1.NodeFirewallRule) { r.InInterface = "" }},
			{r.OutInterface != "", func(r *v1alpha1.NodeFirewallRule) { r.OutInterface = "" }},
			{r.Protocol != "" && len(r.Ports)+len(r.SourcePorts)+len(r.ICMPTypes) == 0 && r.RejectWith != v1alpha1.RejectWithTCPReset,
				func(r *v1alpha1.NodeFirewallRule) { r.Protocol = "" }},
		}
		for _, e := range edits {
			if !e.applies {
				continue
			}
			s := clone()
			e.edit(&s.Rules[i])
			out = append(out, s)
		}
	}
	return out
}
