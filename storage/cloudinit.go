package storage

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labvm/labvm/vm"
	"github.com/labvm/labvm/vm/guest"
	"golang.org/x/crypto/ssh"
)

// The cloud-init documents below are built by hand rather than with a YAML
// library: the shapes are fixed and tiny, and every scalar goes through
// yamlQuote, which emits a JSON string. A JSON string is also a valid YAML
// double-quoted scalar, so no value — however hostile — can end its line,
// start a new key or introduce an anchor or tag.

// ErrInvalidSeed is wrapped by every validation failure of a SeedSpec, so
// callers can tell a bad request from an I/O failure.
var ErrInvalidSeed = errors.New("invalid seed spec")

// SeedSpec is everything the guest learns from its NoCloud seed.
type SeedSpec struct {
	InstanceID string
	Hostname   string
	// User is the guest account to create; "" creates none.
	User string
	// SSHAuthorizedKeys are installed for User. With none, the guest gets no
	// authorized key at all, which keeps SSH closed by default.
	SSHAuthorizedKeys []string
	// MAC selects the NIC to configure; guests name NICs enp1s0-style, so
	// matching by name would be guesswork.
	MAC string
	// Address is the static address; when invalid, the NIC uses DHCP.
	Address netip.Prefix
	Gateway netip.Addr
	DNS     []netip.Addr
	// HostKey, when set, becomes the guest's only SSH host key (cloud-init's
	// ssh_keys); the image's own keys are deleted and none is generated.
	// Nil leaves the guest to generate its own, unknown to anyone.
	HostKey *SSHHostKey
	// PhoneHomeURL, when set, receives a POST once cloud-init has finished,
	// which is how the daemon learns the guest is up.
	PhoneHomeURL string
	// Scripts are the instance's setup and startup scripts, if any.
	Scripts Scripts
	// Datasets are mounted read-only at /datasets/NAME at every boot
	// (cloud-init's bootcmd), each from the virtiofs share tagged NAME.
	Datasets []string
}

// Validate reports the first field that would produce a seed the guest
// cannot use. Builders quote everything, so this is about usefulness and
// clear errors, not about injection.
func (s SeedSpec) Validate() error {
	if s.InstanceID == "" {
		return fmt.Errorf("%w: instance id is empty", ErrInvalidSeed)
	}
	if !utf8.ValidString(s.InstanceID) || strings.ContainsFunc(s.InstanceID, isControl) {
		return fmt.Errorf("%w: instance id %q contains control characters", ErrInvalidSeed, s.InstanceID)
	}
	if err := validateHostname(s.Hostname); err != nil {
		return err
	}
	if err := validateUser(s.User, s.SSHAuthorizedKeys); err != nil {
		return err
	}
	if hw, err := net.ParseMAC(s.MAC); err != nil || len(hw) != 6 || hw.String() != strings.ToLower(s.MAC) {
		return fmt.Errorf("%w: MAC %q: want six colon-separated hex bytes", ErrInvalidSeed, s.MAC)
	}
	if s.Address.IsValid() && s.Gateway.IsValid() && s.Address.Addr().Is4() != s.Gateway.Is4() {
		return fmt.Errorf("%w: gateway %s and address %s are of different families", ErrInvalidSeed, s.Gateway, s.Address)
	}
	for _, d := range s.DNS {
		if !d.IsValid() {
			return fmt.Errorf("%w: DNS server list holds an invalid address", ErrInvalidSeed)
		}
	}
	if s.HostKey != nil {
		if err := s.HostKey.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidSeed, err)
		}
	}
	if s.PhoneHomeURL != "" {
		u, err := url.Parse(s.PhoneHomeURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: phone-home URL %q: want an absolute http(s) URL", ErrInvalidSeed, s.PhoneHomeURL)
		}
	}
	for i, d := range s.Datasets {
		if err := vm.ValidateNameOf("dataset", d); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidSeed, err)
		}
		for _, prev := range s.Datasets[:i] {
			if prev == d {
				return fmt.Errorf("%w: dataset %q given twice", ErrInvalidSeed, d)
			}
		}
	}
	for kind, body := range map[guest.ScriptKind][]byte{guest.ScriptSetup: s.Scripts.Setup, guest.ScriptStartup: s.Scripts.Startup} {
		if len(body) == 0 {
			continue
		}
		if err := guest.ValidateScript(kind, body); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidSeed, err)
		}
		if s.Scripts.Timeout < time.Second {
			return fmt.Errorf("%w: script timeout %s: want at least 1s", ErrInvalidSeed, s.Scripts.Timeout)
		}
	}
	return nil
}

// validateHostname enforces a single RFC 1123 label: cloud-init writes it to
// /etc/hostname and /etc/hosts, where anything else breaks name resolution.
func validateHostname(h string) error {
	if h == "" || len(h) > 63 {
		return fmt.Errorf("%w: hostname %q: want 1 to 63 characters", ErrInvalidSeed, h)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (c != '-' || i == 0 || i == len(h)-1) {
			return fmt.Errorf("%w: hostname %q: want a DNS label (letters, digits, inner hyphens)", ErrInvalidSeed, h)
		}
	}
	return nil
}

// validateUser accepts the portable subset of Linux user names, so useradd
// in the guest cannot reject what we accepted.
func validateUser(user string, keys []string) error {
	if user == "" {
		if len(keys) > 0 {
			return fmt.Errorf("%w: SSH keys given but no guest user to install them for", ErrInvalidSeed)
		}
		return nil
	}
	if len(user) > 32 {
		return fmt.Errorf("%w: user %q: at most 32 characters", ErrInvalidSeed, user)
	}
	for i := 0; i < len(user); i++ {
		c := user[i]
		ok := c >= 'a' && c <= 'z' || c == '_' || i > 0 && (c >= '0' && c <= '9' || c == '-')
		if !ok {
			return fmt.Errorf("%w: user %q: want lowercase letters, digits, '_' or '-', not starting with a digit or '-'", ErrInvalidSeed, user)
		}
	}
	if user == "root" {
		return fmt.Errorf("%w: user %q: root login is disabled in guests", ErrInvalidSeed, user)
	}
	for i, k := range keys {
		if strings.ContainsAny(k, "\r\n") {
			return fmt.Errorf("%w: SSH key %d spans several lines; pass one key per entry", ErrInvalidSeed, i+1)
		}
		if _, err := ParseAuthorizedKey([]byte(k)); err != nil {
			return fmt.Errorf("%w: SSH key %d: %w", ErrInvalidSeed, i+1, err)
		}
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r >= 0x7f && r < 0xa0 }

// MetaData renders the NoCloud meta-data document.
func MetaData(s SeedSpec) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "instance-id: %s\n", yamlQuote(s.InstanceID))
	fmt.Fprintf(&b, "local-hostname: %s\n", yamlQuote(s.Hostname))
	return b.Bytes()
}

// NetworkConfig renders a network-config version 2 document for the single
// NIC identified by s.MAC. It deliberately omits set-name: renaming the NIC
// would fight the guest's own predictable naming and break images whose
// tooling expects it.
func NetworkConfig(s SeedSpec) []byte {
	var b bytes.Buffer
	b.WriteString("version: 2\n")
	b.WriteString("ethernets:\n")
	b.WriteString("  \"nic0\":\n")
	b.WriteString("    match:\n")
	fmt.Fprintf(&b, "      macaddress: %s\n", yamlQuote(strings.ToLower(s.MAC)))
	if !s.Address.IsValid() {
		b.WriteString("    dhcp4: true\n")
	} else {
		b.WriteString("    addresses:\n")
		fmt.Fprintf(&b, "      - %s\n", yamlQuote(s.Address.String()))
		if s.Gateway.IsValid() {
			b.WriteString("    routes:\n")
			// The default route as a prefix, not netplan's "default":
			// cloud-init before 23.x (Debian 12's 22.4) parses v2 routes
			// itself for its ENI and networkd renderers and rejects
			// "default" ("Address default is not a valid ip address"),
			// which leaves the NIC unconfigured.
			def := "0.0.0.0/0"
			if s.Gateway.Is6() {
				def = "::/0"
			}
			fmt.Fprintf(&b, "      - to: %s\n", yamlQuote(def))
			fmt.Fprintf(&b, "        via: %s\n", yamlQuote(s.Gateway.String()))
		}
	}
	if len(s.DNS) > 0 {
		b.WriteString("    nameservers:\n")
		b.WriteString("      addresses:\n")
		for _, d := range s.DNS {
			fmt.Fprintf(&b, "        - %s\n", yamlQuote(d.String()))
		}
	}
	return b.Bytes()
}

// UserData renders the #cloud-config document. It fails on a spec that
// Validate rejects, so a seed never carries a key or hostname the guest
// would choke on.
func UserData(s SeedSpec) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("#cloud-config\n")
	fmt.Fprintf(&b, "hostname: %s\n", yamlQuote(s.Hostname))
	b.WriteString("preserve_hostname: false\n")
	// The hostname resolves in the guest (sudo asks for it): cloud-init
	// adds it to /etc/hosts if missing and leaves the rest of the file,
	// which the user may edit, alone.
	b.WriteString("manage_etc_hosts: localhost\n")
	b.WriteString("ssh_pwauth: false\n")
	b.WriteString("disable_root: true\n")
	if s.HostKey != nil {
		// cloud-init's cc_ssh: ssh_deletekeys removes the image's baked-in
		// keys, so the guest can present no key but ours; given ssh_keys,
		// it generates none. ssh_genkeytypes names only the type ssh_keys
		// writes first (generation skips a key file that exists), so no
		// version of cc_ssh makes another; an empty list would say the
		// same but breaks cloud-init's schema (minItems 1), which logs
		// "Invalid cloud-config provided" at every boot. The key is
		// written to /etc/ssh/ssh_host_ed25519_key{,.pub}.
		b.WriteString("ssh_deletekeys: true\n")
		b.WriteString("ssh_genkeytypes: [ed25519]\n")
		b.WriteString("ssh_keys:\n")
		fmt.Fprintf(&b, "  ed25519_private: %s\n", yamlQuote(string(s.HostKey.Private)))
		fmt.Fprintf(&b, "  ed25519_public: %s\n", yamlQuote(s.HostKey.Public))
	}
	if s.User != "" {
		// Listing only our user (no "default") keeps the image's stock
		// account from being created alongside it.
		b.WriteString("users:\n")
		fmt.Fprintf(&b, "  - name: %s\n", yamlQuote(s.User))
		b.WriteString("    shell: \"/bin/bash\"\n")
		b.WriteString("    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n")
		b.WriteString("    lock_passwd: true\n")
		if len(s.SSHAuthorizedKeys) > 0 {
			b.WriteString("    ssh_authorized_keys:\n")
			for _, k := range s.SSHAuthorizedKeys {
				fmt.Fprintf(&b, "      - %s\n", yamlQuote(strings.TrimSpace(k)))
			}
		}
	}
	if len(s.Datasets) > 0 {
		// bootcmd runs at every boot, early (cloud-init's init stage), so
		// the datasets are there before runcmd and the scripts. Not
		// mounts: the cc_mounts of older cloud-init releases (Debian 12's
		// among them) skips an entry whose device is not a block device,
		// a virtiofs tag included, with only a debug log line.
		b.WriteString("bootcmd:\n")
		for _, d := range s.Datasets {
			fmt.Fprintf(&b, "  - %s\n", yamlQuote(guest.MountDatasetCommand(d, d)))
		}
	}
	// The daemon drives guests through qemu-guest-agent, which stock cloud
	// images do not all ship or enable. It is installed only where it is
	// missing (cloud-init's packages: would run apt at every first boot),
	// and neither installing nor starting it fails the boot: the daemon
	// reports a missing agent on its own.
	runcmd := []string{installAgent, startAgent}
	if s.User != "" || !s.Scripts.empty() {
		b.WriteString("write_files:\n")
	}
	if s.User != "" {
		// Names the instance's user and address for images that start
		// applications as that user (the data-science image); write_files
		// runs once per instance, and the file stays for later boots.
		writeFile(&b, guest.InstanceEnvPath, "0644", guest.InstanceEnv(s.User, s.Address.Addr()))
	}
	if !s.Scripts.empty() {
		runcmd = append(runcmd, writeScripts(&b, s.Scripts)...)
	}
	if len(s.Scripts.Setup) > 0 {
		// Last, so its status is runcmd's: a failed setup fails cloud-init
		// (result.json lists it, `cloud-init status` says error) as any
		// failed runcmd would, and says so in cloud-init-output.log.
		runcmd = append(runcmd, setupCheck)
	}
	b.WriteString("runcmd:\n")
	for _, c := range runcmd {
		fmt.Fprintf(&b, "  - %s\n", yamlQuote(c))
	}
	if s.PhoneHomeURL != "" {
		b.WriteString("phone_home:\n")
		fmt.Fprintf(&b, "  url: %s\n", yamlQuote(s.PhoneHomeURL))
		b.WriteString("  post:\n")
		b.WriteString("    - \"instance_id\"\n")
		b.WriteString("  tries: 10\n")
	}
	return b.Bytes(), nil
}

// installAgent installs qemu-guest-agent only when the image lacks it,
// with whichever of apt or dnf the image has.
const installAgent = `[ -x /usr/sbin/qemu-ga ] || [ -x /usr/bin/qemu-ga ] || command -v qemu-ga >/dev/null 2>&1 || ` +
	`{ command -v apt-get >/dev/null 2>&1 && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-guest-agent; } || ` +
	`{ command -v dnf >/dev/null 2>&1 && dnf install -y -q qemu-guest-agent; } || ` +
	`echo "labvm: could not install qemu-guest-agent" >&2`

// startAgent enables and starts qemu-guest-agent only when it is not
// running already: on Debian, where udev starts it, `systemctl enable`
// goes through its SysV script (update-rc.d) and a daemon reload, ~20 s
// of a TCG first boot (docs/BENCHMARKS-ds.md).
const startAgent = "systemctl is-active --quiet qemu-guest-agent || systemctl enable --now qemu-guest-agent || true"

// setupCheck fails runcmd when the setup script did not exit 0, reading
// the status its runner wrote ("EXIT BOOT_ID").
var setupCheck = `read -r rc boot 2>/dev/null <` + guest.ScriptSetup.StatusPath() + `; [ "$rc" = 0 ] || ` +
	`{ echo "labvm: the setup script failed (exit ${rc:-unknown}); its output is in ` + guest.ScriptSetup.LogPath() + `" >&2; exit 1; }`

// ParseAuthorizedKey parses the content of an SSH public key file and
// returns it normalised to a single "type base64 [comment]" line. Private
// keys are refused by name, because pasting the wrong half of a key pair is
// the usual mistake and must not end up in a guest.
func ParseAuthorizedKey(data []byte) (string, error) {
	if bytes.Contains(data, []byte("PRIVATE KEY")) {
		return "", errors.New("not an SSH public key: this is a private key; pass the .pub file")
	}
	pub, comment, options, rest, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return "", fmt.Errorf("not an SSH public key: %w; pass the .pub file", err)
	}
	if len(options) > 0 {
		return "", fmt.Errorf("SSH public key carries authorized_keys options %q; pass the plain .pub file", options)
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey(rest); err == nil {
		return "", errors.New("input holds more than one SSH public key; pass a single .pub file")
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment = strings.TrimSpace(comment); comment != "" {
		line += " " + comment
	}
	return line, nil
}

// yamlQuote returns s as a JSON string literal, which YAML reads as a
// double-quoted scalar with the same value. Beyond what JSON requires it
// escapes every character YAML parsers refuse to see raw (DEL, C1 controls,
// BOM, non-characters) and YAML's own line breaks, so the output is always
// one printable line.
func yamlQuote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if isControl(r) || r == 0x2028 || r == 0x2029 || r == 0xfeff ||
				r == 0xfffe || r == 0xffff || r == utf8.RuneError {
				fmt.Fprintf(&b, `\u%04x`, r)
				continue
			}
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
