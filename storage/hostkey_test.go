package storage

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labvm/labvm/test/hostreq"
	"golang.org/x/crypto/ssh"
)

// testHostKey is a fixed pair, made by ssh-keygen for these tests only.
var testHostKey = SSHHostKey{
	Private: []byte(`-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDy0u83cBgZGMDt+05pfbOE3UFfkxc13sdNy4Q+h3MtngAAAIhRlmlnUZZp
ZwAAAAtzc2gtZWQyNTUxOQAAACDy0u83cBgZGMDt+05pfbOE3UFfkxc13sdNy4Q+h3Mtng
AAAEC4eZPJxpU1ToZNQyKZoKk+tgeJWXgjjE1XVtyQnf2YIPLS7zdwGBkYwO37Tml9s4Td
QV+TFzXex03LhD6Hcy2eAAAAAAECAwQF
-----END OPENSSH PRIVATE KEY-----
`),
	Public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLS7zdwGBkYwO37Tml9s4TdQV+TFzXex03LhD6Hcy2e",
}

func TestNewSSHHostKey(t *testing.T) {
	a, err := NewSSHHostKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSSHHostKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Validate(); err != nil {
		t.Fatalf("a new key does not validate: %v", err)
	}
	if a.Public == b.Public {
		t.Fatal("two new keys are the same")
	}
	if !strings.HasPrefix(a.Public, "ssh-ed25519 ") || strings.Count(a.Public, " ") != 1 {
		t.Fatalf("public key %q: want one 'ssh-ed25519 BASE64' line", a.Public)
	}
	if !strings.HasPrefix(string(a.Private), "-----BEGIN OPENSSH PRIVATE KEY-----\n") {
		t.Fatalf("private key is not in OpenSSH's format:\n%s", a.Private)
	}
}

// TestNewSSHHostKeyReadByTools has the guest side's tools read a new key:
// OpenSSH's (what cloud-init images run) and dropbear's converter (what
// the test image runs) must both derive the same public key.
func TestNewSSHHostKeyReadByTools(t *testing.T) {
	k, err := NewSSHHostKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	priv := filepath.Join(dir, "ssh_host_ed25519_key")
	if err := os.WriteFile(priv, k.Private, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		tool, pkg string
		pub       func(t *testing.T) string
	}{
		{"ssh-keygen", "openssh-client", func(t *testing.T) string { return run(t, "ssh-keygen", "-y", "-f", priv) }},
		{"dropbearconvert", "dropbear-bin", func(t *testing.T) string {
			db := filepath.Join(dir, "dropbear_ed25519_host_key")
			run(t, "dropbearconvert", "openssh", "dropbear", priv, db)
			return run(t, hostreq.RequireTool(t, "dropbearkey", "dropbear-bin"), "-y", "-f", db)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.tool, func(t *testing.T) {
			hostreq.RequireTool(t, tt.tool, tt.pkg)
			if out := tt.pub(t); !strings.Contains(out, k.Public) {
				t.Fatalf("%s derived:\n%s\nwant a line with %s", tt.tool, out, k.Public)
			}
		})
	}
}

func TestSSHHostKeyValidate(t *testing.T) {
	other, err := NewSSHHostKey()
	if err != nil {
		t.Fatal(err)
	}
	_, ecPriv, _ := ed25519.GenerateKey(rand.Reader)
	pkcs8, err := ssh.MarshalPrivateKey(ecPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	pkcs8.Type = "PRIVATE KEY" // right bytes, wrong armour
	tests := []struct {
		name    string
		key     SSHHostKey
		wantMsg string
	}{
		{name: "fixed test key", key: testHostKey},
		{name: "halves of different keys", key: SSHHostKey{Private: testHostKey.Private, Public: other.Public}, wantMsg: "does not belong"},
		{name: "public key with a second line", key: SSHHostKey{Private: testHostKey.Private, Public: testHostKey.Public + "\nssh-ed25519 AAAA"}, wantMsg: "several lines"},
		{name: "public key garbage", key: SSHHostKey{Private: testHostKey.Private, Public: "hello"}, wantMsg: "SSH host public key"},
		{name: "no private key", key: SSHHostKey{Public: testHostKey.Public}, wantMsg: "OpenSSH's private key format"},
		{name: "another armour", key: SSHHostKey{Private: pem.EncodeToMemory(pkcs8), Public: testHostKey.Public}, wantMsg: "OpenSSH's private key format"},
		{name: "truncated private key", key: SSHHostKey{Private: testHostKey.Private[:120], Public: testHostKey.Public}, wantMsg: "SSH host private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.key.Validate()
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Validate = %v; want an error mentioning %q", err, tt.wantMsg)
			}
		})
	}
}

func TestUserDataHostKey(t *testing.T) {
	withKey := testSpec()
	withKey.PhoneHomeURL = ""
	withKey.HostKey = &testHostKey
	noUser := withKey
	noUser.User, noUser.SSHAuthorizedKeys = "", nil
	const keys = `ssh_deletekeys: true
ssh_genkeytypes: [ed25519]
ssh_keys:
  ed25519_private: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDy0u83cBgZGMDt+05pfbOE3UFfkxc13sdNy4Q+h3MtngAAAIhRlmlnUZZp\nZwAAAAtzc2gtZWQyNTUxOQAAACDy0u83cBgZGMDt+05pfbOE3UFfkxc13sdNy4Q+h3Mtng\nAAAEC4eZPJxpU1ToZNQyKZoKk+tgeJWXgjjE1XVtyQnf2YIPLS7zdwGBkYwO37Tml9s4Td\nQV+TFzXex03LhD6Hcy2eAAAAAAECAwQF\n-----END OPENSSH PRIVATE KEY-----\n"
  ed25519_public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLS7zdwGBkYwO37Tml9s4TdQV+TFzXex03LhD6Hcy2e"
`
	tests := []struct {
		name string
		spec SeedSpec
		want string
	}{
		{name: "user, key and host key", spec: withKey, want: `#cloud-config
hostname: "dev1"
preserve_hostname: false
manage_etc_hosts: localhost
ssh_pwauth: false
disable_root: true
` + keys + `users:
  - name: "alice"
    shell: "/bin/bash"
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    lock_passwd: true
    ssh_authorized_keys:
      - "` + testKey + `"
write_files:
  - path: "/etc/labvm/instance.env"
    permissions: "0644"
    encoding: "b64"
    content: "IyB3cml0dGVuIGJ5IGxhYnZtIGF0IHRoZSBpbnN0YW5jZSdzIGZpcnN0IGJvb3QKTEFCVk1fVVNFUj1hbGljZQpMQUJWTV9BRERSRVNTPTEwLjE3Ny4wLjEwCg=="
runcmd:
  - "[ -x /usr/sbin/qemu-ga ] || [ -x /usr/bin/qemu-ga ] || command -v qemu-ga >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-guest-agent; } || { command -v dnf >/dev/null 2>&1 && dnf install -y -q qemu-guest-agent; } || echo \"labvm: could not install qemu-guest-agent\" >&2"
  - "systemctl is-active --quiet qemu-guest-agent || systemctl enable --now qemu-guest-agent || true"
`},
		{name: "host key without a user", spec: noUser, want: `#cloud-config
hostname: "dev1"
preserve_hostname: false
manage_etc_hosts: localhost
ssh_pwauth: false
disable_root: true
` + keys + `runcmd:
  - "[ -x /usr/sbin/qemu-ga ] || [ -x /usr/bin/qemu-ga ] || command -v qemu-ga >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-guest-agent; } || { command -v dnf >/dev/null 2>&1 && dnf install -y -q qemu-guest-agent; } || echo \"labvm: could not install qemu-guest-agent\" >&2"
  - "systemctl is-active --quiet qemu-guest-agent || systemctl enable --now qemu-guest-agent || true"
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := UserData(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("UserData:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestUserDataRejectsBadHostKey(t *testing.T) {
	spec := testSpec()
	spec.HostKey = &SSHHostKey{Private: testHostKey.Private, Public: testKey}
	_, err := UserData(spec)
	if !errors.Is(err, ErrInvalidSeed) || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("UserData error = %v; want ErrInvalidSeed about a mismatched host key", err)
	}
}

// TestHostKeyRoundTripsThroughYAML parses the user-data with PyYAML, as
// cloud-init does, and checks cc_ssh's keys come back byte for byte.
func TestHostKeyRoundTripsThroughYAML(t *testing.T) {
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		python = hostreq.RequireTool(t, "python3", "python3")
	}
	err := exec.Command(python, "-c", "import yaml").Run()
	hostreq.Require(t, err == nil, fmt.Sprintf("python3 PyYAML (apt-get install python3-yaml): %v", err))
	spec := testSpec()
	spec.HostKey = &testHostKey
	ud, err := UserData(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, "-c", `import json, sys, yaml
json.dump(yaml.safe_load(sys.stdin), sys.stdout)`)
	cmd.Stdin = strings.NewReader(string(ud))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python yaml: %v", err)
	}
	var parsed struct {
		DeleteKeys bool              `json:"ssh_deletekeys"`
		GenTypes   []string          `json:"ssh_genkeytypes"`
		Keys       map[string]string `json:"ssh_keys"`
	}
	if err := json.Unmarshal(out, &parsed); err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	if !parsed.DeleteKeys || len(parsed.GenTypes) != 1 || parsed.GenTypes[0] != "ed25519" {
		t.Fatalf("ssh_deletekeys %v, ssh_genkeytypes %#v; want true and [ed25519], the type ssh_keys writes", parsed.DeleteKeys, parsed.GenTypes)
	}
	if len(parsed.Keys) != 2 || parsed.Keys["ed25519_private"] != string(testHostKey.Private) || parsed.Keys["ed25519_public"] != testHostKey.Public {
		t.Fatalf("ssh_keys parsed as %#v", parsed.Keys)
	}
}
