package compile

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

func TestParseFailsafes(t *testing.T) {
	tcp := func(first, last uint16) Failsafe {
		return Failsafe{Protocol: v1alpha1.ProtocolTCP, Ports: PortInterval{first, last}}
	}
	tests := []struct {
		in      string
		want    []Failsafe
		wantErr string
	}{
		{in: "", want: nil},
		{in: "none", want: nil},
		{in: " NONE ", want: nil},
		{in: "tcp:22", want: []Failsafe{tcp(22, 22)}},
		{in: "tcp:1-65535", want: []Failsafe{tcp(1, 65535)}},
		{
			in: "TCP:22, udp:53,Sctp:9-10",
			want: []Failsafe{
				tcp(22, 22),
				{Protocol: v1alpha1.ProtocolUDP, Ports: PortInterval{53, 53}},
				{Protocol: v1alpha1.ProtocolSCTP, Ports: PortInterval{9, 10}},
			},
		},
		{in: "tcp", wantErr: `failsafe "tcp": want protocol:port`},
		{in: "tcp:", wantErr: `failsafe "tcp:": want protocol:port`},
		{in: "tcp:22,", wantErr: `failsafe "": want protocol:port`},
		{in: "tcp:22,,udp:53", wantErr: `failsafe "": want protocol:port`},
		{in: "tcp:-1", wantErr: `failsafe "tcp:-1": want protocol:port`},
		{in: "tcp:1-2-3", wantErr: `failsafe "tcp:1-2-3": want protocol:port`},
		{in: "tcp:ssh", wantErr: `failsafe "tcp:ssh": want protocol:port`},
		{in: "icmp:8", wantErr: `failsafe "icmp:8": protocol must be tcp, udp or sctp`},
		{in: "tcp:0", wantErr: `failsafe "tcp:0": port 0 is not in 1-65535`},
		{in: "tcp:65536", wantErr: `failsafe "tcp:65536": port 65536 is not in 1-65535`},
		{in: "tcp:99999999999999999999", wantErr: `is not in 1-65535`},
		{in: "udp:10-5", wantErr: `failsafe "udp:10-5": range ends below its start`},
		{in: "none,tcp:22", wantErr: `failsafe "none": want protocol:port`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseFailsafes(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseFailsafes(%q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFailsafes(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseFailsafes(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestFormatFailsafes(t *testing.T) {
	tests := []struct {
		in   []Failsafe
		want string
	}{
		{in: nil, want: "none"},
		{in: []Failsafe{}, want: "none"},
		{in: DefaultFailsafeInbound(), want: "tcp:22,tcp:6443,tcp:2379-2380,tcp:10250,udp:67-68"},
		{in: DefaultFailsafeOutbound(), want: "udp:53,tcp:53,tcp:6443,udp:67-68"},
		{in: []Failsafe{{Protocol: v1alpha1.ProtocolSCTP, Ports: PortInterval{1, 65535}}}, want: "sctp:1-65535"},
	}
	for _, tt := range tests {
		if got := FormatFailsafes(tt.in); got != tt.want {
			t.Errorf("FormatFailsafes(%v) = %q, want %q", tt.in, got, tt.want)
		}
		back, err := ParseFailsafes(tt.want)
		if err != nil {
			t.Fatalf("ParseFailsafes(%q): %v", tt.want, err)
		}
		if len(tt.in) > 0 {
			if diff := cmp.Diff(tt.in, back); diff != "" {
				t.Errorf("ParseFailsafes(FormatFailsafes(x)) != x (-x +got):\n%s", diff)
			}
		} else if back != nil {
			t.Errorf("ParseFailsafes(%q) = %v, want nil", tt.want, back)
		}
	}
}

func TestDefaultFailsafesAreValid(t *testing.T) {
	for _, f := range append(DefaultFailsafeInbound(), DefaultFailsafeOutbound()...) {
		if err := ValidateFailsafe(f); err != nil {
			t.Errorf("%v: %v", f, err)
		}
	}
}
