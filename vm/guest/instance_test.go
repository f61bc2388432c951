package guest

import (
	"net/netip"
	"testing"
)

func TestInstanceEnv(t *testing.T) {
	tests := []struct {
		name string
		user string
		addr netip.Addr
		want string
	}{
		{"static address", "alice", netip.MustParseAddr("10.177.0.5"),
			"# written by labvm at the instance's first boot\nLABVM_USER=alice\nLABVM_ADDRESS=10.177.0.5\n"},
		{"DHCP: no address", "bob", netip.Addr{},
			"# written by labvm at the instance's first boot\nLABVM_USER=bob\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(InstanceEnv(tt.user, tt.addr)); got != tt.want {
				t.Fatalf("InstanceEnv = %q, want %q", got, tt.want)
			}
		})
	}
}
