package importer

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the corpus's golden files")

// corpusDir holds iptables-save files of kinds of hosts users import: a
// RHEL host (RH-Firewall-1-INPUT), an OpenShift node (OS_FIREWALL_ALLOW),
// ufw, a Docker host, a kubeadm node, a Tor relay and an OpenVPN server.
// test/diff loads each next to its import.
const corpusDir = "testdata/corpus"

// TestCorpus imports each file of the corpus and compares the result,
// warnings, summary and YAML, with its golden file (-update rewrites
// them).
func TestCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(corpusDir, "*.rules"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 7 {
		t.Fatalf("%d files in %s, want the 7 of the corpus", len(files), corpusDir)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".rules")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Import(bytes.NewReader(data), Options{Name: name})
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, string(data), res)
			var b strings.Builder
			for _, w := range res.Warnings {
				fmt.Fprintf(&b, "%v\n", w)
			}
			fmt.Fprintf(&b, "%v\n---\n", res.Summary)
			if err := WriteYAML(&b, res.Policy); err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(f, ".rules") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -update writes it)", err)
			}
			if diff := cmp.Diff(string(want), b.String()); diff != "" {
				t.Errorf("import of %s differs from %s (-want +got; -update rewrites it):\n%s", f, golden, diff)
			}
		})
	}
}
