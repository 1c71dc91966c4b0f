package testbed

import (
	"fmt"
	"os"
	"path/filepath"
)

// nodePortTable is the table EmulateNodePort adds to a node's namespace.
const nodePortTable = "testbed-kube-proxy"

// EmulateNodePort adds to a node what kube-proxy adds for a NodePort whose
// endpoint is the node's pod: a nat chain at priority dstnat that sends TCP
// traffic addressed to the node on port to the pod's PodTCPPort. Packets
// for the NodePort then meet the node's Forward chain as pod traffic, after
// PreRouting saw the port the client used, as on a real node. It returns
// the function that removes the table again.
func (c *Cluster) EmulateNodePort(node string, port uint16) (remove func() error, err error) {
	n := c.Node(node)
	ruleset := fmt.Sprintf(`table ip %s {
	chain nodeports {
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local tcp dport %d dnat to %s:%d
	}
}
`, nodePortTable, port, n.Pod.Addr, PodTCPPort)
	file := filepath.Join(c.Dir, fmt.Sprintf("nodeport-%s-%d.nft", node, port))
	if err := os.WriteFile(file, []byte(ruleset), 0o600); err != nil {
		return nil, err
	}
	if _, err := n.NS.Exec("nft", "-f", file); err != nil {
		return nil, fmt.Errorf("emulating NodePort %d on %s: %w", port, node, err)
	}
	return func() error {
		_, err := n.NS.Exec("nft", "delete", "table", "ip", nodePortTable)
		return err
	}, nil
}
