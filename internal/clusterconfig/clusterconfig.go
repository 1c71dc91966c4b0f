// Package clusterconfig turns the NodeFirewallConfig named default into
// the settings the controller and the agents work with, in the style of
// MetalLB's config.For: For is pure, so both read the object the same way,
// and Tracker keeps the last good settings when a generation fails the
// checks (fail-static). Without the object both use their flags, given as
// the bootstrap Settings.
package clusterconfig

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// Settings are nodefw's cluster-wide settings in the form the controller
// and the agents use them.
type Settings struct {
	// FailsafeInbound and FailsafeOutbound are accepted on the input and
	// output chains before any rule.
	FailsafeInbound, FailsafeOutbound []compile.Failsafe
	// ResyncPeriod is how often an agent compares its table with the
	// desired ruleset and repairs it.
	ResyncPeriod time.Duration
	// ConfirmTimeout is how long the control plane may stay unreachable
	// after a new ruleset before the agent restores the previous one; 0
	// disables the check.
	ConfirmTimeout time.Duration
	// ConfirmEndpoint is the host:port an agent must still reach; ""
	// means the API server of its kubeconfig.
	ConfirmEndpoint string
	// SetLookups compiles runs of simple rules into set lookups.
	SetLookups bool
}

// Defaults are the settings of a NodeFirewallConfig with an empty spec:
// the CRD's defaults, which the API server fills in, for a spec read
// without it (nodefw render).
func Defaults() Settings {
	return Settings{
		FailsafeInbound:  compile.DefaultFailsafeInbound(),
		FailsafeOutbound: compile.DefaultFailsafeOutbound(),
		ResyncPeriod:     10 * time.Second,
		ConfirmTimeout:   10 * time.Second,
		SetLookups:       true,
	}
}

// Bounds of the agent's durations, as the CRD's validation states them.
const (
	minResyncPeriod   = time.Second
	maxResyncPeriod   = time.Hour
	maxConfirmTimeout = 5 * time.Minute
)

// For checks a NodeFirewallConfig's spec and returns its settings. What
// the spec leaves unset takes the CRD's defaults (see Defaults). It checks
// everything the controller and the agents rely on, the CRD's validation
// included: an object stored before a check existed, or past it, must not
// reach the kernel.
func For(spec *fwv1.NodeFirewallConfigSpec) (Settings, error) {
	s := Defaults()
	var errs []error
	if spec.Failsafes.Inbound != nil {
		s.FailsafeInbound, errs = failsafes("spec.failsafes.inbound", spec.Failsafes.Inbound, errs)
	}
	if spec.Failsafes.Outbound != nil {
		s.FailsafeOutbound, errs = failsafes("spec.failsafes.outbound", spec.Failsafes.Outbound, errs)
	}
	a := spec.Agent
	if a.ResyncPeriod != nil {
		s.ResyncPeriod = a.ResyncPeriod.Duration
		if s.ResyncPeriod < minResyncPeriod || s.ResyncPeriod > maxResyncPeriod {
			errs = append(errs, fmt.Errorf("spec.agent.resyncPeriod: %v is not between %v and %v", s.ResyncPeriod, minResyncPeriod, maxResyncPeriod))
		}
	}
	if a.ConfirmTimeout != nil {
		s.ConfirmTimeout = a.ConfirmTimeout.Duration
		if s.ConfirmTimeout < 0 || s.ConfirmTimeout > maxConfirmTimeout {
			errs = append(errs, fmt.Errorf("spec.agent.confirmTimeout: %v is not between 0s and %v", s.ConfirmTimeout, maxConfirmTimeout))
		}
	}
	if a.ConfirmEndpoint != "" {
		if err := checkHostPort(a.ConfirmEndpoint); err != nil {
			errs = append(errs, fmt.Errorf("spec.agent.confirmEndpoint: %w", err))
		}
		s.ConfirmEndpoint = a.ConfirmEndpoint
	}
	if a.SetLookups != nil {
		s.SetLookups = *a.SetLookups
	}
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, err := range errs {
			msgs[i] = err.Error()
		}
		return Settings{}, errors.New(strings.Join(msgs, "; "))
	}
	return s, nil
}

// failsafes converts one list: each entry becomes one compile.Failsafe
// per port range, with the entry's addresses, in order.
func failsafes(path string, in []fwv1.Failsafe, errs []error) ([]compile.Failsafe, []error) {
	out := []compile.Failsafe{}
	for i, f := range in {
		at := fmt.Sprintf("%s[%d]", path, i)
		if !f.Protocol.HasPorts() {
			errs = append(errs, fmt.Errorf("%s.protocol: %q is not TCP, UDP or SCTP", at, f.Protocol))
			continue
		}
		if len(f.Ports) == 0 {
			errs = append(errs, fmt.Errorf("%s.ports: at least one port is required", at))
			continue
		}
		src, err := prefixes(at+".sources", f.Sources)
		errs = appendErr(errs, err)
		dst, err := prefixes(at+".destinations", f.Destinations)
		errs = appendErr(errs, err)
		for j, p := range f.Ports {
			if p.Port < 1 || p.Port > 65535 || p.Last() < p.Port || p.Last() > 65535 {
				errs = append(errs, fmt.Errorf("%s.ports[%d]: %d-%d is not a range within 1-65535", at, j, p.Port, p.Last()))
				continue
			}
			fs := compile.Failsafe{
				Protocol:     f.Protocol,
				Ports:        compile.PortInterval{First: uint16(p.Port), Last: uint16(p.Last())},
				Sources:      src,
				Destinations: dst,
			}
			if err := compile.ValidateFailsafe(fs); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", at, err))
				break
			}
			out = append(out, fs)
		}
	}
	return out, errs
}

// prefixes parses addresses and CIDRs as the CRD's isIP and isCIDR accept
// them (no zones, no IPv4-mapped IPv6 addresses), masked.
func prefixes(path string, addrs []string) ([]netip.Prefix, error) {
	if len(addrs) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for i, a := range addrs {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			ip, ierr := netip.ParseAddr(a)
			if ierr != nil || ip.Zone() != "" {
				return nil, fmt.Errorf("%s[%d]: %q is not an IP address or CIDR", path, i, a)
			}
			p = netip.PrefixFrom(ip, ip.BitLen())
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("%s[%d]: %q is an IPv4-mapped IPv6 address; write the IPv4 address", path, i, a)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// checkHostPort checks a host:port with a port in 1-65535.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if host == "" || err != nil || n == 0 {
		return fmt.Errorf("%q is not host:port with a port in 1-65535", s)
	}
	return nil
}

func appendErr(errs []error, err error) []error {
	if err != nil {
		return append(errs, err)
	}
	return errs
}
