// Command nodefw is the user's CLI: import iptables rules as policies,
// render the ruleset a node would get, trace a packet through a node's
// firewall, test policies against expected verdicts, and summarise the
// cluster's status.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

const usage = `nodefw: declarative node host firewalls for Kubernetes.

Usage:
  nodefw import [-f iptables-save.txt] [--name NAME] [--node-selector k=v,...] [--priority N] [--mode Enforce|Audit] [--strict]
      Translate iptables-save or iptables -S output into NodeFirewallPolicy YAML;
      --strict fails when a filter rule is skipped or changed.
  nodefw render -f policy.yaml [-f nodefirewallconfig.yaml] [--node-labels k=v,...] [--node-name NAME] [--table NAME]
                [--failsafe-inbound LIST] [--failsafe-outbound LIST]
      Print the exact nftables ruleset a node with those labels would get.
  nodefw trace (-f policy.yaml [--node node.yaml] [--node-labels k=v,...] [--node-name NAME] | --live NODE)
               --proto tcp|udp|sctp|icmp|icmpv6|N --from ADDR[:PORT] --to ADDR[:PORT]
               [--chain Input|Forward|Output] [--in-interface IF] [--out-interface IF]
               [--state new|established|related|invalid] [--icmp-type TYPE]
               [--failsafe-inbound LIST] [--failsafe-outbound LIST] [-o text|json] [--color auto|always|never]
      Trace a packet through a node's firewall: every step, the one that decides, and why
      the others did not match. Exit code: 0 accept, 3 drop, 4 reject, 1 error, 2 usage.
  nodefw test -f policy.yaml TESTS.yaml... [--failsafe-inbound LIST] [--failsafe-outbound LIST] [-v]
              [-o text|json] [--color auto|always|never]
      Run test cases (a packet on a node and its expected verdict) against policy files.
      Exit code: 0 all passed, 1 a case failed, 2 the cases could not run.
  nodefw status [--kubeconfig PATH]
      Summarise every policy and node firewall in the cluster.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "import":
		err = runImport(args[1:], stdin, stdout, stderr)
	case "render":
		err = runRender(args[1:], stdin, stdout, stderr)
	case "trace":
		return runTrace(args[1:], stdin, stdout, stderr)
	case "test":
		return runTest(args[1:], stdin, stdout, stderr)
	case "status":
		err = runStatus(args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "nodefw: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "nodefw:", err)
		return 1
	}
	return 0
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
