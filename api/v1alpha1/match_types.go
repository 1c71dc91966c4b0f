package v1alpha1

// SourcePortRange is an inclusive range of source ports, as `--sport
// port:endPort`.
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || self.endPort >= self.port",message="endPort must not be below port",fieldPath=".endPort"
type SourcePortRange struct {
	// port is the first source port of the range (iptables `--sport`).
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// endPort is the last source port of the range, inclusive (`--sport
	// port:endPort`). Omitted means the single port `port`.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	EndPort int32 `json:"endPort,omitempty"`
}

// Last returns the last port of the range.
func (p SourcePortRange) Last() int32 {
	if p.EndPort == 0 {
		return p.Port
	}
	return p.EndPort
}

// RejectWith is the answer of a Reject rule, as `--reject-with`.
// +kubebuilder:validation:Enum=PortUnreachable;TCPReset;HostUnreachable;AdminProhibited;NetUnreachable
type RejectWith string

const (
	// RejectWithPortUnreachable: ICMP port-unreachable, ICMPv6
	// port-unreachable (icmp-port-unreachable, icmp6-port-unreachable),
	// iptables' default.
	RejectWithPortUnreachable RejectWith = "PortUnreachable"
	// RejectWithTCPReset: a TCP reset (tcp-reset); TCP rules only.
	RejectWithTCPReset RejectWith = "TCPReset"
	// RejectWithHostUnreachable: ICMP host-unreachable, ICMPv6
	// address-unreachable (icmp-host-unreachable, icmp6-addr-unreachable).
	RejectWithHostUnreachable RejectWith = "HostUnreachable"
	// RejectWithAdminProhibited: ICMP communication administratively
	// prohibited, ICMPv6 administratively prohibited
	// (icmp-admin-prohibited, icmp6-adm-prohibited).
	RejectWithAdminProhibited RejectWith = "AdminProhibited"
	// RejectWithNetUnreachable: ICMP network-unreachable, ICMPv6 no route
	// (icmp-net-unreachable, icmp6-no-route).
	RejectWithNetUnreachable RejectWith = "NetUnreachable"
)

// RateUnit is the time unit of a rate limit.
// +kubebuilder:validation:Enum=Second;Minute;Hour;Day
type RateUnit string

const (
	RateUnitSecond RateUnit = "Second"
	RateUnitMinute RateUnit = "Minute"
	RateUnitHour   RateUnit = "Hour"
	RateUnitDay    RateUnit = "Day"
)

// DefaultLimitBurst is the burst of a limit that sets none, as iptables'
// `--limit-burst` default.
const DefaultLimitBurst int32 = 5

// RateLimit matches packets up to a rate, as `-m limit` or, per source
// address, `-m hashlimit --hashlimit-mode srcip`: a token bucket that
// holds burst packets and refills at rate per unit. A packet over the
// limit does not match, and goes on to the next rule, as in iptables.
type RateLimit struct {
	// rate is how many packets per unit the rule matches (`--limit
	// rate/unit`, `--hashlimit-upto rate/unit`), at most 10000, as
	// iptables allows.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	Rate int32 `json:"rate"`

	// per is the unit of rate: Second, Minute, Hour or Day.
	// +required
	Per RateUnit `json:"per"`

	// burst is how many packets the rule matches at once before the rate
	// applies (`--limit-burst`, `--hashlimit-burst`). Omitted means 5, as
	// in iptables.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	Burst int32 `json:"burst,omitempty"`

	// perSource keeps one bucket per source address rather than one for
	// the rule (`-m hashlimit --hashlimit-mode srcip`): each source gets
	// the whole rate. The node remembers at most 65535 sources per rule
	// and IP family; a source it cannot add does not match. A source
	// forgets its bucket once the bucket would have refilled.
	// +optional
	PerSource bool `json:"perSource,omitempty"`
}

// BurstOrDefault is the burst of the limit, DefaultLimitBurst when unset.
func (l RateLimit) BurstOrDefault() int32 {
	if l.Burst == 0 {
		return DefaultLimitBurst
	}
	return l.Burst
}

// ConnLimit matches packets from a source address that has more than a
// number of connections open, as `-m connlimit --connlimit-above N`
// (per address: `--connlimit-mask` 32 and 128).
type ConnLimit struct {
	// above is the number of connections from one source address, the
	// packet's own counted, above which the rule matches
	// (`--connlimit-above`). Packets of sources at or below it do not
	// match and go on to the next rule. The node counts at most 65535
	// sources per rule and IP family.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	Above int32 `json:"above"`
}
