// Package diff is the differential test of nodefw's ruleset against
// iptables: the same NodeFirewallSpec is loaded two ways, each in its own
// network namespace, and real TCP and UDP probes must get the same verdict
// from both.
//
//   - The reference: the spec rendered by reference.IPTablesRestore and
//     loaded with iptables-nft-restore and ip6tables-nft-restore into
//     router "iptables".
//   - The agent's path: compile.Compile without failsafes and
//     nft.Programmer.Apply into router "nodefw".
//
// A third verdict comes without a kernel: reference.TraceSpec, the trace
// `nodefw trace` prints, of each probe's first packet through the rule
// set. It must be the verdict of the agent's path, and of iptables unless
// the case is excused; the tests report disagreements next to mismatches
// and fail on any.
//
// Each router forwards between a client namespace (several source
// addresses) and a server namespace. Probes go client to router (Input),
// client to server and back (Forward), and router to client and server
// (Output, dialled from inside the router): TCP connections and UDP
// exchanges, from ephemeral or chosen source ports, and ICMP and ICMPv6
// messages and packets of other IP protocols, which count as accepted
// when a raw socket of the destination receives them. Every probe's first
// packet is new to conntrack: a packet of a protocol conntrack tracks by
// addresses alone shares its entry with the probes of that protocol back
// the other way, so those probes run in rounds that share no entry, with
// conntrack flushed before each.
//
// Besides random rule sets and the sample policies, the importer's corpus
// of iptables-save files is compared with its imports
// (TestImportedCorpus): each file, without the lines the import reports
// as not translated, against the imported policy. Random rulesets that
// look up ipset sets (TestIPSetRuleSets: `-m set --match-set`, hash:ip
// and hash:net of both families, nomatch entries included) are loaded
// with ipset into the iptables router and, imported with their `ipset
// save` output, as policies whose peers look up NodeFirewallAddressSets
// into nodefw's.
//
// The tests run as root and fail, rather than skip, without it. The random
// rule sets are reproducible: set i of seed s is drawn from (s, i).
//
//	go test ./test/diff/ -diff.seed=7 -diff.count=200
//	go test ./test/diff/ -run TestRandomRuleSets -diff.seed=7 -diff.set=42 -v
//
// A mismatch prints the rule set in both renderings, the probe and both
// verdicts, then shrinks the rule set to a minimal reproducer; so does a
// rule set that one side fails to load.
package diff
