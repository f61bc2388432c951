package network

import (
	"bufio"
	"bytes"
	"net/netip"
	"strings"
)

// Nameservers returns the usable upstream resolvers of a resolv.conf.
// Loopback resolvers (systemd-resolved's 127.0.0.53, a local dnsmasq) are
// skipped: from inside a guest they would point at the guest itself.
func Nameservers(resolvConf []byte) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(resolvConf))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil || a.IsLoopback() || !a.Is4() {
			continue
		}
		out = append(out, a)
	}
	return out
}
