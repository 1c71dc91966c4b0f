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

// probe is one connection attempt, made the same way on both sides.
type probe struct {
	chain    v1alpha1.Chain
	proto    v1alpha1.Protocol
	from     endpoint
	src, dst netip.Addr
	port     uint16
}

func (p probe) String() string {
	return fmt.Sprintf("%s %s %s -> %s", p.chain, strings.ToLower(string(p.proto)), p.src, netip.AddrPortFrom(p.dst, p.port))
}

// pair is a source and destination of a probe.
type pair struct {
	chain    v1alpha1.Chain
	from     endpoint
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
				out = append(out, pair{chain: c, from: from, src: s, dst: d})
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
				out = append(out, probe{chain: p.chain, proto: pr.proto, from: p.from, src: p.src, dst: p.dst, port: port})
			}
		}
	}
	return out
}

// run sends one probe on one side.
func (s *side) run(p probe, timeout time.Duration) (netnstest.Verdict, error) {
	opts := []netnstest.ProbeOption{netnstest.WithSource(p.src), netnstest.WithTimeout(timeout)}
	if p.proto == v1alpha1.ProtocolTCP {
		return netnstest.ProbeTCP(s.ns(p.from), p.dst, p.port, opts...)
	}
	return netnstest.ProbeUDP(s.ns(p.from), p.dst, p.port, opts...)
}

// result is a probe's verdict on both sides.
type result struct {
	probe
	ipt, nfw netnstest.Verdict
}

func (r result) String() string {
	return fmt.Sprintf("%v: iptables %v, nodefw %v", r.probe, r.ipt, r.nfw)
}

// runAll sends every probe on both sides, in parallel.
func (t *topology) runAll(probes []probe, timeout time.Duration) ([]result, error) {
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

// stats sums up a test's work.
type stats struct {
	mu         sync.Mutex
	sets       int
	probes     int
	mismatches int
	shrunk     int
}

func (s *stats) add(probes, mismatches int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sets++
	s.probes += probes
	s.mismatches += mismatches
}

// check loads a rule set into both routers, sends the probes and reports
// every probe whose verdicts differ, with both renderings of the rule set,
// then shrinks it to a minimal reproducer. It returns the confirmed
// mismatches.
func (t *topology) check(tb testing.TB, c *ruleCase, probes []probe, st *stats) []result {
	tb.Helper()
	if err := t.load(c); err != nil {
		tb.Fatalf("%s: loading:\n%s\n%v", c.name, describe(c), err)
	}
	results, err := t.runAll(probes, *timeoutFlag)
	if err != nil {
		tb.Fatalf("%s: %v", c.name, err)
	}
	var suspects []probe
	for _, r := range results {
		if r.ipt != r.nfw {
			suspects = append(suspects, r.probe)
		}
	}
	var confirmed []result
	tb.Logf("DEBUG %s: %d suspects", c.name, len(suspects))
	if len(suspects) > 0 {
		if err := t.flushConntrack(); err != nil {
			tb.Fatal(err)
		}
		for _, p := range suspects {
			r, differ, err := t.confirm(p)
			if err != nil {
				tb.Fatalf("%s: %v: %v", c.name, p, err)
			}
			if differ {
				confirmed = append(confirmed, r)
			}
		}
	}
	st.add(len(probes), len(confirmed))
	if len(confirmed) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d of %d probes get different verdicts:\n", c.name, len(confirmed), len(probes))
	for i, r := range confirmed {
		if i == 20 {
			fmt.Fprintf(&b, "  ... and %d more\n", len(confirmed)-i)
			break
		}
		fmt.Fprintf(&b, "  %v\n", r)
	}
	b.WriteString(describe(c))
	tb.Error(b.String())

	st.mu.Lock()
	shrink := st.shrunk < *shrinkFlag
	st.shrunk++
	st.mu.Unlock()
	if shrink {
		min, r := t.shrink(tb, c, confirmed[0].probe)
		tb.Errorf("%s: minimal reproducer of %v:\n%s", c.name, r, describe(min))
	}
	return confirmed
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
	if rs, err := compile.Compile(c.spec, compile.Options{}); err != nil {
		fmt.Fprintf(&b, "--- compile: %v\n", err)
	} else {
		fmt.Fprintf(&b, "--- nodefw (compile.Render)\n%s", compile.Render(rs))
	}
	return b.String()
}

// shrink removes rules and simplifies the rest, default actions included,
// as long as the probe still gets different verdicts, and returns the
// smallest rule set found with the probe's verdicts under it.
func (t *topology) shrink(tb testing.TB, c *ruleCase, p probe) (*ruleCase, result) {
	tb.Helper()
	cur := c
	last := result{probe: p}
	still := func(spec v1alpha1.NodeFirewallSpec) bool {
		var cand *ruleCase
		if c.derived {
			cand = newRuleCase(c.name+" (shrunk)", spec)
		} else {
			// A hand-written iptables text has no spec to shrink.
			return false
		}
		if err := t.load(cand); err != nil {
			tb.Logf("shrinking %s: %v", c.name, err)
			return false
		}
		r, differ, err := t.confirm(p)
		if err != nil {
			tb.Logf("shrinking %s: %v", c.name, err)
			return false
		}
		if differ {
			cur, last = cand, r
		}
		return differ
	}
	if !c.derived || !still(c.spec) {
		return c, last
	}
	for progress := true; progress; {
		progress = false
		for _, cand := range simplifications(cur.spec) {
			if still(cand) {
				progress = true
				break
			}
		}
	}
	return cur, last
}

// simplifications are the specs one step simpler than spec: a rule
// removed, a default action relaxed, or one field of a rule cleared.
func simplifications(spec v1alpha1.NodeFirewallSpec) []v1alpha1.NodeFirewallSpec {
	var out []v1alpha1.NodeFirewallSpec
	clone := func() v1alpha1.NodeFirewallSpec { return *spec.DeepCopy() }
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
			{r.Protocol != "" && len(r.Ports) == 0, func(r *v1alpha1.NodeFirewallRule) { r.Protocol = "" }},
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
