package diff

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/importer"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/resolve"
)

// corpusDir is the importer's corpus of iptables-save files.
var corpusDir = filepath.Join("..", "..", "internal", "importer", "testdata", "corpus")

// corpusMapping puts each corpus file on the probes' topology: its
// interfaces become the router's (ethc0 towards the clients, eths0 towards
// the servers, which play containers, pods and VPN clients) and its
// addresses ones that cover the probes'. Anything else stays as written.
var corpusMapping = map[string]map[string]string{
	"rhel-host":      {"192.168.10.0/24": "10.77.1.12/30"},
	"openshift-node": {"docker0": "eths0", "tun0": "eths0", "10.128.0.0/14": "10.244.0.0/16"},
	"ufw-host":       {"192.168.1.0/24": "10.77.1.8/30"},
	"docker-host": {
		"docker0": "eths0", "172.17.0.2/32": "10.77.2.10/32", "172.17.0.3/32": "10.77.2.20/32",
		"172.17.0.0/16": "10.77.2.0/24", "203.0.113.0/24": "10.77.1.12/30",
	},
	"kubeadm-node": {"docker0": "eths0", "192.168.1.0/24": "10.77.1.8/30"},
	"tor-relay":    {},
	"openvpn-server": {
		"eth0": "ethc0", "tun+": "eths+", "10.8.0.0/24": "10.77.2.0/24", "10.8.0.1/32": "10.77.2.1/32",
	},
}

// mapCorpus rewrites the tokens of a corpus file that mapping names.
func mapCorpus(text string, mapping map[string]string) string {
	for from, to := range mapping {
		re := regexp.MustCompile(`(^|\s)` + regexp.QuoteMeta(from) + `(\s|$)`)
		text = re.ReplaceAllString(text, "${1}"+to+"${2}")
	}
	return text
}

// importedOnly is what the import promises to reproduce of an
// iptables-save text: its filter table, and the PREROUTING chains of its
// raw and mangle tables, with the rule lines skipped commented out. The
// other chains of raw and mangle, their policies and rules, are commented
// out too, and the nat and other tables left out.
func importedOnly(text string, skipped []int) string {
	var b strings.Builder
	table := ""
	for i, line := range strings.Split(text, "\n") {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "*"):
			table = strings.TrimPrefix(t, "*")
		case table != "filter" && table != "raw" && table != "mangle":
			continue
		case slices.Contains(skipped, i+1):
			b.WriteString("# not imported: ")
		case table != "filter" && (strings.HasPrefix(t, "-A ") || strings.HasPrefix(t, "-I ")) && !strings.HasPrefix(t[3:], "PREROUTING "),
			table != "filter" && strings.HasPrefix(t, ":") && !strings.HasPrefix(t, ":PREROUTING "):
			b.WriteString("# not imported: ")
		}
		if table == "filter" || table == "raw" || table == "mangle" {
			b.WriteString(line + "\n")
		}
		if t == "COMMIT" {
			table = ""
		}
	}
	return b.String()
}

// corpusPorts are the ports of a file's --dport(s) and --sport(s): every
// port, and both ends of every range with their outer neighbours.
func corpusPorts(text string) (dports, sports []uint16) {
	re := regexp.MustCompile(`--([ds])ports? (\S+)`)
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		var out []int
		for _, part := range strings.Split(m[2], ",") {
			first, last, isRange := strings.Cut(part, ":")
			var lo, hi int
			fmt.Sscan(first, &lo)
			hi = lo
			if isRange {
				fmt.Sscan(last, &hi)
				out = append(out, lo-1, hi+1)
			}
			out = append(out, lo, hi)
		}
		for _, p := range out {
			if p < 1 || p > 65535 {
				continue
			}
			list := &dports
			if m[1] == "s" {
				list = &sports
			}
			if !slices.Contains(*list, uint16(p)) {
				*list = append(*list, uint16(p))
			}
		}
	}
	slices.Sort(dports)
	slices.Sort(sports)
	return dports, sports
}

// corpusMessages are the ICMP messages and other protocols a file names,
// and an echo request: what its ICMP and protocol rules tell apart.
func corpusMessages(text string) []netnstest.IPMessage {
	out := []netnstest.IPMessage{{Protocol: netnstest.ProtoICMP, Type: 8}}
	add := func(m netnstest.IPMessage) {
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	if strings.Contains(text, "-p icmp") {
		for _, tc := range [][2]uint8{{3, 3}, {3, 4}, {11, 0}, {12, 0}, {13, 0}} {
			add(netnstest.IPMessage{Protocol: netnstest.ProtoICMP, Type: tc[0], Code: tc[1]})
		}
	}
	for name, proto := range map[string]uint8{"esp": 50, "ah": 51, "gre": 47} {
		if strings.Contains(text, "-p "+name+" ") {
			add(netnstest.IPMessage{Protocol: proto})
		}
	}
	return out
}

// extraServed are the ports serveExtraPorts added.
var extraServed struct {
	sync.Mutex
	ports map[uint16]bool
}

// serveExtraPorts has every namespace of both sides serve ports, TCP and
// UDP, besides servedPorts, so that a probe tells an accept from a reject
// whichever way it goes.
func (t *topology) serveExtraPorts(dports []uint16) error {
	extraServed.Lock()
	defer extraServed.Unlock()
	if extraServed.ports == nil {
		extraServed.ports = map[uint16]bool{}
		for _, p := range servedPorts() {
			extraServed.ports[p] = true
		}
	}
	var ports []uint16
	for _, p := range dports {
		if !extraServed.ports[p] {
			ports = append(ports, p)
			extraServed.ports[p] = true
		}
	}
	if len(ports) == 0 {
		return nil
	}
	for _, s := range []*side{t.ipt, t.nfw} {
		for _, ns := range s.namespaces() {
			if _, err := ns.ServeTCP(ports...); err != nil {
				return fmt.Errorf("%s: %w", ns, err)
			}
			if _, err := ns.ServeUDPEcho(ports...); err != nil {
				return fmt.Errorf("%s: %w", ns, err)
			}
		}
	}
	return nil
}

// isServed reports whether every namespace serves port: a probe cannot
// be sent from it.
func isServed(port uint16) bool {
	extraServed.Lock()
	defer extraServed.Unlock()
	return extraServed.ports[port] || slices.Contains(servedPorts(), port)
}

// TestImportedCorpus imports each file of the importer's corpus, put on
// the probes' topology, and compares the file's filter table, loaded by
// iptables-nft-restore without the lines the import reported as not
// translated, with the imported policy resolved for a node and programmed
// by the agent's path. Probes are built from the file: every pair of the
// topology over TCP and UDP to every port it names (and the neighbours of
// its ranges), from the source ports it names, and the ICMP messages and
// protocols it matches. Lines imported with a caveat stay on the iptables
// side: none of the caveats changes a verdict.
func TestImportedCorpus(t *testing.T) {
	tp := env(t)
	files, err := filepath.Glob(filepath.Join(corpusDir, "*.rules"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(corpusMapping) {
		t.Fatalf("%d corpus files, %d mappings: map every file onto the topology", len(files), len(corpusMapping))
	}
	var st stats
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".rules")
		t.Run(name, func(t *testing.T) {
			mapping, ok := corpusMapping[name]
			if !ok {
				t.Fatalf("no mapping of %s onto the topology", name)
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			text := mapCorpus(string(data), mapping)
			res, err := importer.Import(strings.NewReader(text), importer.Options{Name: name})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("import: %v", res.Summary)
			node := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node", Labels: map[string]string{"kubernetes.io/hostname": "node"}}}
			resolved := resolve.Resolve(resolve.Input{Policies: []v1alpha1.NodeFirewallPolicy{*res.Policy}, Nodes: []corev1.Node{node}})
			for _, p := range resolved.Problems {
				t.Errorf("resolving: %s: %s: %s", p.Policy, p.Reason, p.Message)
			}
			dports, sports := corpusPorts(text)
			if err := tp.serveExtraPorts(dports); err != nil {
				t.Fatal(err)
			}
			ps := pairs(false)
			probes := matrix(ps, dports, dports)
			var clientPairs []pair
			for _, p := range ps {
				if p.from == client {
					clientPairs = append(clientPairs, p)
				}
			}
			var free []uint16
			for _, p := range sports {
				if !isServed(p) {
					free = append(free, p)
				}
			}
			if len(free) > 0 && len(dports) > 0 {
				probes = append(probes, sourcePortMatrix(clientPairs, free, dports[:min(len(dports), 4)])...)
			}
			probes = append(probes, messageMatrix(ps, corpusMessages(text))...)
			c := &ruleCase{name: "corpus " + name, spec: resolved.Nodes[node.Name], v4: importedOnly(text, res.SkippedLines), v6: acceptAll}
			tp.check(t, c, probes, &st)
		})
	}
	t.Log(&st)
}
