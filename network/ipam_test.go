package network

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestNextFree(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	tests := []struct {
		name    string
		subnet  netip.Prefix
		used    []netip.Addr
		want    netip.Addr
		wantErr error
	}{
		{"empty /24", p("10.177.0.0/24"), nil, a("10.177.0.10"), nil},
		{"skips used", p("10.177.0.0/24"), []netip.Addr{a("10.177.0.10"), a("10.177.0.11")}, a("10.177.0.12"), nil},
		{"fills holes", p("10.177.0.0/24"), []netip.Addr{a("10.177.0.11")}, a("10.177.0.10"), nil},
		{"small /29 starts after gateway", p("10.1.0.0/29"), nil, a("10.1.0.2"), nil},
		{"/29 full", p("10.1.0.0/29"), []netip.Addr{a("10.1.0.2"), a("10.1.0.3"), a("10.1.0.4"), a("10.1.0.5"), a("10.1.0.6")}, netip.Addr{}, ErrSubnetFull},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NextFree(tt.subnet, tt.used)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNextFreeNeverHandsOutBroadcast(t *testing.T) {
	s := netip.MustParsePrefix("10.2.0.0/28")
	var used []netip.Addr
	for {
		a, err := NextFree(s, used)
		if err != nil {
			break
		}
		if a == netip.MustParseAddr("10.2.0.15") || a == Gateway(s) || a == s.Addr() {
			t.Fatalf("handed out reserved address %s", a)
		}
		used = append(used, a)
	}
	if len(used) != 13 {
		t.Fatalf("got %d addresses from a /28, want 13", len(used))
	}
}

func TestValidateSubnet(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"10.0.0.0/24", true},
		{"10.0.0.0/29", true},
		{"10.0.0.0/30", false},
		{"10.0.0.1/24", false},
		{"fd00::/64", false},
	} {
		err := ValidateSubnet(netip.MustParsePrefix(tt.in))
		if (err == nil) != tt.ok {
			t.Errorf("ValidateSubnet(%s) = %v", tt.in, err)
		}
	}
}

func TestMACStable(t *testing.T) {
	m1, m2 := MAC("abc"), MAC("abc")
	if m1 != m2 || MAC("abd") == m1 {
		t.Fatalf("MAC not stable per id: %s %s %s", m1, m2, MAC("abd"))
	}
	if m1[:9] != "52:54:00:" {
		t.Fatalf("MAC %s outside QEMU's range", m1)
	}
}

func TestGuestAddrs(t *testing.T) {
	tests := []struct {
		subnet string
		from   string
		want   []string
	}{
		{"10.9.0.0/29", "", []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}},
		{"10.9.0.0/29", "10.9.0.4", []string{"10.9.0.5", "10.9.0.6", "10.9.0.2", "10.9.0.3", "10.9.0.4"}},
		{"10.9.0.0/29", "10.9.0.6", []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}},
		{"10.9.0.0/29", "192.0.2.1", []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}},
	}
	for _, tt := range tests {
		var from netip.Addr
		if tt.from != "" {
			from = netip.MustParseAddr(tt.from)
		}
		var got []string
		for a := range GuestAddrs(netip.MustParsePrefix(tt.subnet), from) {
			got = append(got, a.String())
		}
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("GuestAddrs(%s, %s) = %v, want %v", tt.subnet, tt.from, got, tt.want)
		}
	}
	// Every address NextFree would give is among them, for a big subnet too.
	p := netip.MustParsePrefix("10.9.0.0/24")
	n := 0
	for a := range GuestAddrs(p, netip.Addr{}) {
		if n == 0 {
			if first, _ := NextFree(p, nil); first != a {
				t.Fatalf("first guest address %s, NextFree says %s", a, first)
			}
		}
		n++
	}
	if want := 256 - 1 - firstGuestOffset; n != want {
		t.Fatalf("a /24 yields %d guest addresses, want %d", n, want)
	}
}

func TestAddressMAC(t *testing.T) {
	tests := []struct{ ip, want string }{
		{"10.177.0.10", "52:54:0a:b1:00:0a"},
		{"192.168.255.254", "52:54:c0:a8:ff:fe"},
	}
	for _, tt := range tests {
		got := AddressMAC(netip.MustParseAddr(tt.ip))
		if got != tt.want {
			t.Errorf("AddressMAC(%s) = %s, want %s", tt.ip, got, tt.want)
		}
		hw, err := net.ParseMAC(got)
		if err != nil || hw[0]&1 != 0 || hw[0]&2 == 0 {
			t.Errorf("AddressMAC(%s) = %s: want a unicast, locally administered MAC", tt.ip, got)
		}
	}
	// Distinct addresses give distinct MACs, across a whole /16.
	seen := map[string]bool{}
	for a, i := netip.MustParseAddr("10.9.0.0"), 0; i < 1<<16; a, i = a.Next(), i+1 {
		m := AddressMAC(a)
		if seen[m] {
			t.Fatalf("AddressMAC repeats %s at %s", m, a)
		}
		seen[m] = true
	}
}
