// Package reference states nodefw's semantics a second time, plainly and
// apart from the compiler, for the tests and the differential suite to
// hold the compiler, the agent and the kernel to:
//
//   - TraceSpec decides a packet by reading a NodeFirewallSpec as the README
//     states its meaning, step by step, saying why each rule before the
//     deciding one did not match (`nodefw trace` and `nodefw test` print
//     it); EvalSpec is its verdict alone. EvalRuleset decides a packet by
//     running it through a compiled Ruleset as the kernel runs it through
//     the table.
//   - Validate checks a spec with the libraries' parsers and checks, where
//     the compiler has fast paths of its own.
//   - IPTablesRestore renders a spec as iptables-restore input, which the
//     differential suite loads next to the agent's table.
//
// Nothing in the agent or the controller imports it.
package reference
