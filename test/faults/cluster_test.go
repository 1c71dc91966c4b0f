package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/testbed/suite"
)

const (
	// resyncPeriod is the agents' drift-repair period.
	resyncPeriod = 2 * time.Second
	// statusWithin bounds waits for status and for convergence after a
	// component comes back.
	statusWithin = suite.StatusWithin
	// outageEnv shortens the API server outage (a Go duration).
	outageEnv = "NODEFW_FAULTS_OUTAGE"
)

// bed is the cluster the tests with a whole nodefw share, started by the
// first test that needs it, with the sample policies applied. Each test
// leaves it as it found it; when the baseline does not settle after a
// fault, its manager and agents are restarted.
var bed = suite.New(suite.Options{
	Name:                 "faults",
	Prefix:               "nfwf-",
	ResyncPeriod:         resyncPeriod,
	RestartWhenUnsettled: true,
})

// nodeFirewalls returns every NodeFirewall by name.
func nodeFirewalls(ctx context.Context, c *suite.Cluster) (map[string]*fwv1.NodeFirewall, error) {
	var list fwv1.NodeFirewallList
	if err := c.Client.List(ctx, &list); err != nil {
		return nil, err
	}
	out := make(map[string]*fwv1.NodeFirewall, len(list.Items))
	for i := range list.Items {
		out[list.Items[i].Name] = &list.Items[i]
	}
	return out, nil
}

// tableExists reports whether a node's kernel holds nodefw's table.
func tableExists(c *suite.Cluster, node string) bool {
	_, err := c.Ruleset(node)
	return err == nil
}

// driftRepairs counts the DriftRepaired events of a node's NodeFirewall,
// an event series counting as its number of occurrences.
func driftRepairs(ctx context.Context, c *suite.Cluster, node string) (int32, error) {
	var list eventsv1.EventList
	if err := c.Client.List(ctx, &list); err != nil {
		return 0, err
	}
	var n int32
	for _, e := range list.Items {
		if e.Reason != "DriftRepaired" || e.Regarding.Kind != "NodeFirewall" || e.Regarding.Name != node {
			continue
		}
		if e.Series != nil {
			n += e.Series.Count
		} else {
			n++
		}
	}
	return n, nil
}

// pidOf finds the process of a testbed child by an argument only it has
// (a node's namespace path, the cluster's kubeconfig for the manager) and
// its executable's base name.
func pidOf(name, arg string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) == name && slices.Contains(args[1:], arg) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s process with argument %s", name, arg)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture nodefw runs on.
const clockTicks = 100

// cpuTime is the user plus system CPU time a process has used.
func cpuTime(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing parenthesis. utime and stime are fields 14 and 15.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	var ticks int64
	for _, f := range fields[11:13] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// isNotFound reports whether err says the object does not exist.
func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

// getObject is Client.Get with a short timeout of its own.
func getObject(c *suite.Cluster, name string, obj client.Object) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Client.Get(ctx, client.ObjectKey{Name: name}, obj)
}
