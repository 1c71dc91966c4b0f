// Package e2e runs the whole of nodefw on one machine — a control plane,
// the manager, and three network-namespace nodes each with its own agent
// and a pod behind it — and proves with real packets that the sample
// policies, live changes and failures do what they should. It needs root
// (run `sudo make e2e`).
package e2e

import (
	"os"
	"testing"
	"time"

	"github.com/nodefw/nodefw/internal/testbed/suite"
)

// resyncPeriod is the agents' drift-repair period.
const resyncPeriod = 2 * time.Second

// changeWithin is how soon a change must show in the kernel of every node.
const changeWithin = 5 * time.Second

// bed is the cluster the tests share, started before them with the sample
// policies applied; every test leaves it as it found it.
var bed = suite.New(suite.Options{
	Name:         "e2e",
	Prefix:       "nfwe-",
	ResyncPeriod: resyncPeriod,
	StartFirst:   true,
})

func TestMain(m *testing.M) {
	os.Exit(bed.Main(m))
}
