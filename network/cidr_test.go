package network

import (
	"net/netip"
	"strings"
	"testing"
)

func TestValidateCIDR(t *testing.T) {
	tests := []struct {
		cidr    string
		wantErr string // substring; empty: valid
	}{
		{"10.177.0.0/24", ""},
		{"172.16.5.0/24", ""},
		{"192.168.100.0/29", ""},
		{"100.64.0.0/24", ""},
		{"0.0.0.0/8", "this network"},
		{"0.1.0.0/24", "this network"},
		{"0.0.0.0/0", "this network"},
		{"127.0.0.0/24", "loopback"},
		{"126.0.0.0/7", "loopback"},
		{"169.254.10.0/24", "link-local"},
		{"169.0.0.0/8", "link-local"},
		{"224.0.0.0/24", "multicast"},
		{"239.255.0.0/16", "multicast"},
		{"240.0.0.0/24", "reserved"},
		{"255.255.255.248/29", "reserved"},
		{"fd00::/64", "not IPv4"},
		{"::ffff:10.0.0.0/120", "not IPv4"},
		{"10.1.2.3/24", "host bits set"},
		{"10.1.2.0/30", "too small"},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			err := ValidateCIDR(netip.MustParsePrefix(tt.cidr))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ValidateCIDR(%s) = %v, want nil", tt.cidr, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("ValidateCIDR(%s) = %v, want an error about %q", tt.cidr, err, tt.wantErr)
			case err != nil && !strings.Contains(err.Error(), "use") && !strings.Contains(err.Error(), "did you mean"):
				t.Fatalf("ValidateCIDR(%s) = %v: does not say what to use instead", tt.cidr, err)
			}
		})
	}
	if err := ValidateCIDR(netip.Prefix{}); err == nil {
		t.Fatal("ValidateCIDR accepted the zero prefix")
	}
}
