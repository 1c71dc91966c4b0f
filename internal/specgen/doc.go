// Package specgen generates node firewall specs for tests and benchmarks:
// large allowlists (Allowlist) for the benchmarks, and random rule sets
// over a universe of addresses, interfaces and ports (Random) for the
// differential test. Both are reproducible: the same inputs give the same
// spec.
package specgen
