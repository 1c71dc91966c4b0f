package agent

import (
	"context"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// The agent reads the NodeFirewallConfig, and nothing else of it.
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewallconfigs,verbs=get;list;watch

// settings are what one reconcile works with: the Reconciler's own fields,
// with what the NodeFirewallConfig sets in their place.
type settings struct {
	compile        compile.Options
	resync         time.Duration
	confirm        Confirmer
	confirmTimeout time.Duration
	// configGen is the NodeFirewallConfig generation they come from; 0
	// for the Reconciler's fields (the flags).
	configGen int64
	// set tells settings in force from the zero value.
	set bool
	// addressSets fingerprints the NodeFirewallAddressSets compiled in
	// (see addressSets).
	addressSets string
	// followed are the generations of the policies the NodeFirewall
	// follows that were pinned (see pin).
	followed map[string]int64
}

// generations identify what a ruleset was compiled from: a NodeFirewall
// generation with the NodeFirewallConfig generation of its settings and
// the generations of the address sets its peers look up.
type generations struct {
	nfw, config           int64
	addressSets, policies string
}

// currentSettings reads the NodeFirewallConfig from the cache and returns
// the settings in force: its last generation that passed the checks, or
// the Reconciler's fields without one.
func (r *Reconciler) currentSettings(ctx context.Context) settings {
	s := settings{compile: r.Compile, resync: r.ResyncPeriod, confirm: r.Confirm, confirmTimeout: r.ConfirmTimeout, set: true}
	if r.Config == nil {
		return s
	}
	cfg := &fwv1.NodeFirewallConfig{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: fwv1.NodeFirewallConfigName}, cfg); err != nil {
		if client.IgnoreNotFound(err) != nil {
			// The cache cannot fail to read what it holds; keep what was in
			// force rather than fall back to the flags, or, before the first
			// reconcile, take the flags.
			log.FromContext(ctx).Error(err, "reading the NodeFirewallConfig; keeping the settings in force")
			if !r.cur.set {
				return s
			}
			return r.cur
		}
		cfg = nil
	}
	in := r.Config.Observe(cfg)
	if in.Err != nil && cfg.Generation != r.refusedConfigGen {
		r.refusedConfigGen = cfg.Generation
		log.FromContext(ctx).Error(in.Err, "NodeFirewallConfig refused; keeping the last good settings",
			"generation", cfg.Generation, "inForce", in.Generation)
	}
	c := in.Settings
	s.compile.FailsafeInbound, s.compile.FailsafeOutbound = c.FailsafeInbound, c.FailsafeOutbound
	s.compile.SetLookups = c.SetLookups
	s.resync, s.confirmTimeout, s.configGen = c.ResyncPeriod, c.ConfirmTimeout, in.Generation
	if c.ConfirmEndpoint != "" && r.ConfirmerFor != nil {
		s.confirm = r.ConfirmerFor(c.ConfirmEndpoint)
	}
	if s.confirmTimeout <= 0 {
		s.confirm = nil
	}
	return s
}
