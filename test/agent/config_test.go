package agent

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// Second client addresses, on the same links as ClientV4 and ClientV6:
// "elsewhere" to a failsafe restricted to the client's first addresses.
var (
	otherV4 = netip.MustParseAddr("192.0.2.9")
	otherV6 = netip.MustParseAddr("2001:db8:1::9")
)

// TestConfigFailsafeBySource runs the agent binary against the API server
// and the kernel: a NodeFirewallConfig failsafe restricted to a source
// accepts its port from that source and not from elsewhere, over IPv4 and
// IPv6, and each change of the object reaches the kernel without a
// restart of the agent, back to the agent's flags when it is deleted.
func TestConfigFailsafeBySource(t *testing.T) {
	ctx := context.Background()
	pair := netnstest.NewTestPair(t)
	if err := pair.Client.AddAddr("eth0", otherV4.String()+"/24", otherV6.String()+"/64"); err != nil {
		t.Fatal(err)
	}
	srv, err := pair.Host.ServeTCP(2222, 10250)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// expect probes tcp/2222 from each client address.
	expect := func(step string, from map[netip.Addr]netnstest.Verdict) {
		t.Helper()
		for src, want := range from {
			dst := netnstest.HostV4
			if src.Is6() {
				dst = netnstest.HostV6
			}
			envtesting.Eventually(t, 15*time.Second, func() error {
				got, err := netnstest.ProbeTCP(pair.Client, dst, 2222, netnstest.WithSource(src))
				if err != nil || got != want {
					return fmt.Errorf("%s: tcp/2222 from %s: %v (%v), want %v", step, src, got, err, want)
				}
				return nil
			})
		}
	}

	const node = "config-node"
	createNFW(t, node, kubeletSpec())
	agent := startAgent(t, node, pair.Host)
	waitReady(t, node, metav1.ConditionTrue, "Applied")
	expect("the agent's flags: no failsafe for tcp/2222", map[netip.Addr]netnstest.Verdict{
		netnstest.ClientV4: netnstest.Dropped, otherV4: netnstest.Dropped,
	})

	cfg := &fwv1.NodeFirewallConfig{
		ObjectMeta: metav1.ObjectMeta{Name: fwv1.NodeFirewallConfigName},
		Spec: fwv1.NodeFirewallConfigSpec{
			Failsafes: fwv1.Failsafes{Inbound: []fwv1.Failsafe{{
				Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 2222}},
				Sources: []string{netnstest.ClientV4.String(), netnstest.ClientV6.String() + "/128"},
			}}},
			Agent: fwv1.AgentSettings{ResyncPeriod: &metav1.Duration{Duration: time.Second}, ConfirmTimeout: &metav1.Duration{}},
		},
	}
	if err := cp.Client.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Client.Delete(context.Background(), cfg) })
	expect("a failsafe from the client's first addresses", map[netip.Addr]netnstest.Verdict{
		netnstest.ClientV4: netnstest.Accepted, otherV4: netnstest.Dropped,
		netnstest.ClientV6: netnstest.Accepted, otherV6: netnstest.Dropped,
	})
	table := pair.Host.MustExec("nft", "list", "chain", "inet", "nodefw", "input")
	for _, want := range []string{"ip saddr 192.0.2.1 tcp dport 2222 counter", "ip6 saddr 2001:db8:1::1 tcp dport 2222 counter"} {
		if !strings.Contains(table, want) {
			t.Errorf("the input chain lacks %q:\n%s", want, table)
		}
	}

	// Another source: the kernel follows without a restart.
	if err := cp.Client.Get(ctx, client.ObjectKeyFromObject(cfg), cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Spec.Failsafes.Inbound[0].Sources = []string{otherV4.String() + "/32"}
	if err := cp.Client.Update(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	expect("the failsafe moved to the second address", map[netip.Addr]netnstest.Verdict{
		netnstest.ClientV4: netnstest.Dropped, otherV4: netnstest.Accepted, otherV6: netnstest.Dropped,
	})

	// Deleted: the agent's flags again.
	if err := cp.Client.Delete(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	expect("no NodeFirewallConfig: the flags", map[netip.Addr]netnstest.Verdict{
		netnstest.ClientV4: netnstest.Dropped, otherV4: netnstest.Dropped,
	})
	// One process throughout: the test bed never restarts it.
	if !agent.Running() {
		t.Error("the agent exited; the changes must apply to the running process")
	}
	netnstest.ExpectTCP(t, pair.Client, netnstest.HostV4, 10250, netnstest.Accepted)
	_ = cp.Client.Delete(ctx, &fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: node}})
}
