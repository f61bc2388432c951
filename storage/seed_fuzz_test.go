package storage

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// FuzzSeedDocuments feeds hostile values to the cloud-init builders. Every
// document must parse as YAML, keep its fixed line structure (a value can
// never start a line of its own) and give each value back unchanged, and
// no top-level key may appear that the builder did not write.
func FuzzSeedDocuments(f *testing.F) {
	f.Add("i-1", "alice-dev", "alice", "52:54:00:12:34:56", "10.0.0.5/24", "10.0.0.1", "1.1.1.1", "http://10.0.0.1:8719/x")
	f.Add("x\ny: 1", "h\"\n- evil", "root", "52:54:00:AB:CD:EF", "", "", "", "")
	f.Add("\u2028\ufeff\x85\x00", "a", "_u", "zz", "fd00::5/64", "fd00::1", "::1", "https://[::1]/p?q=\n")
	f.Fuzz(func(t *testing.T, id, host, user, mac, addr, gw, dns, phone string) {
		s := SeedSpec{InstanceID: id, Hostname: host, User: user, MAC: mac, PhoneHomeURL: phone}
		s.Address, _ = netip.ParsePrefix(addr)
		s.Gateway, _ = netip.ParseAddr(gw)
		if a, err := netip.ParseAddr(dns); err == nil {
			s.DNS = []netip.Addr{a}
		}

		meta := MetaData(s)
		if n := bytes.Count(meta, []byte("\n")); n != 2 {
			t.Fatalf("meta-data has %d lines, want 2:\n%s", n, meta)
		}
		m := parseYAML(t, "meta-data", meta)
		wantValue(t, m, "instance-id", id)
		wantValue(t, m, "local-hostname", host)

		netcfg := parseYAML(t, "network-config", NetworkConfig(s))
		if v, ok := netcfg["version"].(int); !ok || v != 2 {
			t.Fatalf("network-config version = %v", netcfg["version"])
		}
		onlyKeys(t, "network-config", netcfg, "version", "ethernets")
		nic := netcfg["ethernets"].(map[string]any)["nic0"].(map[string]any)
		wantValue(t, nic["match"].(map[string]any), "macaddress", strings.ToLower(mac))

		ud, err := UserData(s)
		if err != nil {
			return // refused input is fine; unparsable output is not
		}
		if !bytes.HasPrefix(ud, []byte("#cloud-config\n")) {
			t.Fatalf("user-data does not start with #cloud-config:\n%s", ud)
		}
		u := parseYAML(t, "user-data", ud)
		wantValue(t, u, "hostname", host)
		onlyKeys(t, "user-data", u, "hostname", "preserve_hostname", "manage_etc_hosts", "ssh_pwauth", "disable_root",
			"users", "packages", "runcmd", "phone_home", "write_files", "bootcmd")
	})
}

func parseYAML(t *testing.T, what string, doc []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(doc, &m); err != nil {
		t.Fatalf("%s does not parse: %v\n%s", what, err, doc)
	}
	return m
}

// wantValue checks a value survived quoting; invalid UTF-8 is replaced by
// design, so only valid strings must come back byte for byte.
func wantValue(t *testing.T, m map[string]any, key, want string) {
	t.Helper()
	if !utf8.ValidString(want) {
		return
	}
	if got, _ := m[key].(string); got != want {
		t.Fatalf("%s = %q, want %q", key, m[key], want)
	}
}

func onlyKeys(t *testing.T, what string, m map[string]any, allowed ...string) {
	t.Helper()
	for k := range m {
		if !slices.Contains(allowed, k) {
			t.Fatalf("%s has unexpected top-level key %q", what, k)
		}
	}
}
