package network

import (
	"net/netip"
	"slices"
	"testing"
)

func TestNameservers(t *testing.T) {
	tests := []struct {
		conf string
		want []netip.Addr
	}{
		{"nameserver 192.0.2.53\nnameserver 198.51.100.1\n", []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("198.51.100.1")}},
		{"# comment\nnameserver 127.0.0.53\noptions edns0\n", nil},
		{"search lab\nnameserver fe80::1%eth0\nnameserver bogus\n", nil},
		{"", nil},
	}
	for _, tt := range tests {
		if got := Nameservers([]byte(tt.conf)); !slices.Equal(got, tt.want) {
			t.Errorf("Nameservers(%q) = %v, want %v", tt.conf, got, tt.want)
		}
	}
}
