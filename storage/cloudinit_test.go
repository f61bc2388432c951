package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/labvm/labvm/test/hostreq"
	"github.com/labvm/labvm/vm/guest"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8zrXJh6CEkMLasaVLJs+5HcmtP0My6FSaq0ynGD1H+ alice@laptop"

func testSpec() SeedSpec {
	return SeedSpec{
		InstanceID:        "i-0123abcd",
		Hostname:          "dev1",
		User:              "alice",
		SSHAuthorizedKeys: []string{testKey},
		MAC:               "52:54:00:12:34:56",
		Address:           netip.MustParsePrefix("10.177.0.10/24"),
		Gateway:           netip.MustParseAddr("10.177.0.1"),
		DNS:               []netip.Addr{netip.MustParseAddr("10.177.0.1")},
		PhoneHomeURL:      "http://10.177.0.1:8080/phone-home/i-0123abcd",
	}
}

func TestMetaData(t *testing.T) {
	tests := []struct {
		name string
		spec SeedSpec
		want string
	}{
		{name: "plain", spec: testSpec(), want: "instance-id: \"i-0123abcd\"\nlocal-hostname: \"dev1\"\n"},
		{
			name: "hostile values stay inside their scalar",
			spec: SeedSpec{InstanceID: "x\"\nevil: 1", Hostname: "a\\b\u2028c\x7f"},
			want: "instance-id: \"x\\\"\\nevil: 1\"\nlocal-hostname: \"a\\\\b\\u2028c\\u007f\"\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(MetaData(tc.spec)); got != tc.want {
				t.Fatalf("MetaData:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestNetworkConfig(t *testing.T) {
	noDNS := testSpec()
	noDNS.DNS = nil
	dhcp := testSpec()
	dhcp.Address, dhcp.Gateway, dhcp.DNS = netip.Prefix{}, netip.Addr{}, nil
	upper := testSpec()
	upper.MAC = "52:54:00:AB:CD:EF"
	upper.DNS = append(upper.DNS, netip.MustParseAddr("2001:db8::53"))
	v6 := testSpec()
	v6.Address, v6.Gateway, v6.DNS = netip.MustParsePrefix("2001:db8::10/64"), netip.MustParseAddr("2001:db8::1"), nil

	tests := []struct {
		name string
		spec SeedSpec
		want string
	}{
		{name: "static with DNS", spec: testSpec(), want: `version: 2
ethernets:
  "nic0":
    match:
      macaddress: "52:54:00:12:34:56"
    addresses:
      - "10.177.0.10/24"
    routes:
      - to: "0.0.0.0/0"
        via: "10.177.0.1"
    nameservers:
      addresses:
        - "10.177.0.1"
`},
		{name: "static without DNS", spec: noDNS, want: `version: 2
ethernets:
  "nic0":
    match:
      macaddress: "52:54:00:12:34:56"
    addresses:
      - "10.177.0.10/24"
    routes:
      - to: "0.0.0.0/0"
        via: "10.177.0.1"
`},
		{name: "no address falls back to DHCP", spec: dhcp, want: `version: 2
ethernets:
  "nic0":
    match:
      macaddress: "52:54:00:12:34:56"
    dhcp4: true
`},
		{name: "MAC lowercased, two resolvers", spec: upper, want: `version: 2
ethernets:
  "nic0":
    match:
      macaddress: "52:54:00:ab:cd:ef"
    addresses:
      - "10.177.0.10/24"
    routes:
      - to: "0.0.0.0/0"
        via: "10.177.0.1"
    nameservers:
      addresses:
        - "10.177.0.1"
        - "2001:db8::53"
`},
		{name: "IPv6 default route as ::/0", spec: v6, want: `version: 2
ethernets:
  "nic0":
    match:
      macaddress: "52:54:00:12:34:56"
    addresses:
      - "2001:db8::10/64"
    routes:
      - to: "::/0"
        via: "2001:db8::1"
`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(NetworkConfig(tc.spec)); got != tc.want {
				t.Fatalf("NetworkConfig:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestUserData(t *testing.T) {
	noKeys := testSpec()
	noKeys.SSHAuthorizedKeys = nil
	noKeys.PhoneHomeURL = ""
	noUser := noKeys
	noUser.User = ""

	tests := []struct {
		name string
		spec SeedSpec
		want string
	}{
		{name: "user with key and phone home", spec: testSpec(), want: `#cloud-config
hostname: "dev1"
preserve_hostname: false
manage_etc_hosts: localhost
ssh_pwauth: false
disable_root: true
users:
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
phone_home:
  url: "http://10.177.0.1:8080/phone-home/i-0123abcd"
  post:
    - "instance_id"
  tries: 10
`},
		{name: "user without keys gets no authorized key", spec: noKeys, want: `#cloud-config
hostname: "dev1"
preserve_hostname: false
manage_etc_hosts: localhost
ssh_pwauth: false
disable_root: true
users:
  - name: "alice"
    shell: "/bin/bash"
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    lock_passwd: true
write_files:
  - path: "/etc/labvm/instance.env"
    permissions: "0644"
    encoding: "b64"
    content: "IyB3cml0dGVuIGJ5IGxhYnZtIGF0IHRoZSBpbnN0YW5jZSdzIGZpcnN0IGJvb3QKTEFCVk1fVVNFUj1hbGljZQpMQUJWTV9BRERSRVNTPTEwLjE3Ny4wLjEwCg=="
runcmd:
  - "[ -x /usr/sbin/qemu-ga ] || [ -x /usr/bin/qemu-ga ] || command -v qemu-ga >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-guest-agent; } || { command -v dnf >/dev/null 2>&1 && dnf install -y -q qemu-guest-agent; } || echo \"labvm: could not install qemu-guest-agent\" >&2"
  - "systemctl is-active --quiet qemu-guest-agent || systemctl enable --now qemu-guest-agent || true"
`},
		{name: "no user", spec: noUser, want: `#cloud-config
hostname: "dev1"
preserve_hostname: false
manage_etc_hosts: localhost
ssh_pwauth: false
disable_root: true
runcmd:
  - "[ -x /usr/sbin/qemu-ga ] || [ -x /usr/bin/qemu-ga ] || command -v qemu-ga >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-guest-agent; } || { command -v dnf >/dev/null 2>&1 && dnf install -y -q qemu-guest-agent; } || echo \"labvm: could not install qemu-guest-agent\" >&2"
  - "systemctl is-active --quiet qemu-guest-agent || systemctl enable --now qemu-guest-agent || true"
`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := UserData(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("UserData:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestUserDataRejects(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*SeedSpec)
		wantMsg string
	}{
		{name: "empty instance id", mutate: func(s *SeedSpec) { s.InstanceID = "" }, wantMsg: "instance id is empty"},
		{name: "instance id with newline", mutate: func(s *SeedSpec) { s.InstanceID = "a\nb" }, wantMsg: "control characters"},
		{name: "hostname with newline", mutate: func(s *SeedSpec) { s.Hostname = "dev1\nruncmd: [x]" }, wantMsg: "DNS label"},
		{name: "hostname with quote", mutate: func(s *SeedSpec) { s.Hostname = `dev"1` }, wantMsg: "DNS label"},
		{name: "hostname with dot", mutate: func(s *SeedSpec) { s.Hostname = "dev1.example.com" }, wantMsg: "DNS label"},
		{name: "hostname leading hyphen", mutate: func(s *SeedSpec) { s.Hostname = "-dev" }, wantMsg: "DNS label"},
		{name: "hostname empty", mutate: func(s *SeedSpec) { s.Hostname = "" }, wantMsg: "1 to 63"},
		{name: "hostname too long", mutate: func(s *SeedSpec) { s.Hostname = strings.Repeat("a", 64) }, wantMsg: "1 to 63"},
		{name: "user with space", mutate: func(s *SeedSpec) { s.User = "bob smith" }, wantMsg: "lowercase letters"},
		{name: "user starting with digit", mutate: func(s *SeedSpec) { s.User = "1bob" }, wantMsg: "lowercase letters"},
		{name: "root user", mutate: func(s *SeedSpec) { s.User = "root" }, wantMsg: "root login"},
		{name: "keys without user", mutate: func(s *SeedSpec) { s.User = "" }, wantMsg: "no guest user"},
		{name: "multi-line key", mutate: func(s *SeedSpec) { s.SSHAuthorizedKeys = []string{testKey + "\n- evil"} }, wantMsg: "several lines"},
		{name: "garbage key", mutate: func(s *SeedSpec) { s.SSHAuthorizedKeys = []string{"hello"} }, wantMsg: "not an SSH public key"},
		{name: "bad MAC", mutate: func(s *SeedSpec) { s.MAC = "52-54-00-12-34-56" }, wantMsg: "MAC"},
		{name: "mixed families", mutate: func(s *SeedSpec) { s.Gateway = netip.MustParseAddr("fe80::1") }, wantMsg: "different families"},
		{name: "relative phone-home URL", mutate: func(s *SeedSpec) { s.PhoneHomeURL = "/phone-home" }, wantMsg: "absolute http(s) URL"},
		{name: "phone-home URL with newline", mutate: func(s *SeedSpec) { s.PhoneHomeURL = "http://x/\nruncmd: [x]" }, wantMsg: "absolute http(s) URL"},
		{name: "dataset with a slash", mutate: func(s *SeedSpec) { s.Datasets = []string{"../etc"} }, wantMsg: "invalid dataset name"},
		{name: "dataset with shell", mutate: func(s *SeedSpec) { s.Datasets = []string{"a;reboot"} }, wantMsg: "invalid dataset name"},
		{name: "dataset with a space", mutate: func(s *SeedSpec) { s.Datasets = []string{"data set"} }, wantMsg: "invalid dataset name"},
		{name: "dataset twice", mutate: func(s *SeedSpec) { s.Datasets = []string{"imagenet", "imagenet"} }, wantMsg: "given twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := testSpec()
			tc.mutate(&spec)
			_, err := UserData(spec)
			if !errors.Is(err, ErrInvalidSeed) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("UserData error = %v; want ErrInvalidSeed mentioning %q", err, tc.wantMsg)
			}
		})
	}
}

// hostileSpec carries values that would add keys to a naively templated
// document: quote breaks, newlines, list items, anchors, aliases and tags.
func hostileSpec() SeedSpec {
	s := testSpec()
	s.InstanceID = "i\"\n- evil\nruncmd: [\"reboot\"]\n&a *a !!python/object:os.system"
	s.SSHAuthorizedKeys = []string{testKey + ` x" ]}, &anchor *alias !!str #c - evil: 1`}
	s.PhoneHomeURL = `http://h/a"b?c=&x*y#!!z` + "\u2028runcmd: [x]"
	return s
}

// userDataIgnoringID renders user-data, which does not carry the instance
// id, past the validation that rejects control characters in the id, so the
// hostile id can still be fed to MetaData.
func userDataIgnoringID(s SeedSpec) ([]byte, error) {
	s.InstanceID = "i-0123abcd"
	return UserData(s)
}

// quotedScalar matches one JSON string literal.
var quotedScalar = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// TestHostileValuesCannotAddKeys checks structure without a YAML parser:
// after blanking every quoted scalar, the hostile documents have exactly the
// lines of the benign ones, and every scalar decodes as a JSON string.
func TestHostileValuesCannotAddKeys(t *testing.T) {
	benign, hostile := testSpec(), hostileSpec()
	render := func(s SeedSpec) map[string]string {
		ud, err := userDataIgnoringID(s)
		if err != nil {
			t.Fatalf("UserData: %v", err)
		}
		return map[string]string{"meta-data": string(MetaData(s)), "user-data": string(ud), "network-config": string(NetworkConfig(s))}
	}
	want, got := render(benign), render(hostile)
	for name := range want {
		t.Run(name, func(t *testing.T) {
			for _, lit := range quotedScalar.FindAllString(got[name], -1) {
				var v string
				if err := json.Unmarshal([]byte(lit), &v); err != nil {
					t.Fatalf("scalar %s is not a JSON string: %v", lit, err)
				}
			}
			shape := func(doc string) string { return quotedScalar.ReplaceAllString(doc, `""`) }
			if shape(got[name]) != shape(want[name]) {
				t.Fatalf("hostile input changed the document's shape:\n%s\nwant shape of:\n%s", got[name], want[name])
			}
		})
	}
}

// TestHostileValuesRoundTripThroughYAML parses the documents with PyYAML,
// the parser cloud-init itself uses, and checks each value comes back
// verbatim under its own key.
func TestHostileValuesRoundTripThroughYAML(t *testing.T) {
	// Debian's python3 first: cloud-init runs on it, and a python3 from
	// another install earlier in PATH may lack PyYAML.
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		python = hostreq.RequireTool(t, "python3", "python3")
	}
	err := exec.Command(python, "-c", "import yaml").Run()
	hostreq.Require(t, err == nil, fmt.Sprintf("python3 PyYAML (apt-get install python3-yaml): %v", err))
	s := hostileSpec()
	ud, err := userDataIgnoringID(s)
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]string{"meta": string(MetaData(s)), "user": string(ud), "net": string(NetworkConfig(s))}
	in, _ := json.Marshal(docs)
	cmd := exec.Command(python, "-c", `import json, sys, yaml
docs = json.load(sys.stdin)
json.dump({k: yaml.safe_load(v) for k, v in docs.items()}, sys.stdout)`)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python yaml: %v", err)
	}
	var parsed struct {
		Meta map[string]any `json:"meta"`
		User struct {
			Users []struct {
				Keys []string `json:"ssh_authorized_keys"`
			} `json:"users"`
			PhoneHome map[string]any `json:"phone_home"`
			Runcmd    []any          `json:"runcmd"`
		} `json:"user"`
	}
	if err := json.Unmarshal(out, &parsed); err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	if len(parsed.Meta) != 2 || parsed.Meta["instance-id"] != s.InstanceID {
		t.Fatalf("meta-data parsed as %#v", parsed.Meta)
	}
	if len(parsed.User.Users) != 1 || len(parsed.User.Users[0].Keys) != 1 || parsed.User.Users[0].Keys[0] != s.SSHAuthorizedKeys[0] {
		t.Fatalf("users parsed as %#v", parsed.User.Users)
	}
	if parsed.User.PhoneHome["url"] != s.PhoneHomeURL || len(parsed.User.PhoneHome) != 3 {
		t.Fatalf("phone_home parsed as %#v", parsed.User.PhoneHome)
	}
	if len(parsed.User.Runcmd) != 2 {
		t.Fatalf("runcmd parsed as %#v", parsed.User.Runcmd)
	}
	var top map[string]map[string]any
	if err := json.Unmarshal(out, &top); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(maps.Keys(top["user"]))
	wantKeys := []string{"disable_root", "hostname", "manage_etc_hosts", "phone_home", "preserve_hostname", "runcmd", "ssh_pwauth", "users", "write_files"}
	if !slices.Equal(keys, wantKeys) {
		t.Fatalf("user-data has top-level keys %v, want %v", keys, wantKeys)
	}
}

func TestParseAuthorizedKey(t *testing.T) {
	const body = "AAAAC3NzaC1lZDI1NTE5AAAAIL8zrXJh6CEkMLasaVLJs+5HcmtP0My6FSaq0ynGD1H+"
	tests := []struct {
		name    string
		in      string
		want    string
		wantMsg string
	}{
		{name: "pub file", in: testKey + "\n", want: testKey},
		{name: "no comment", in: "ssh-ed25519 " + body, want: "ssh-ed25519 " + body},
		{name: "extra whitespace", in: "  ssh-ed25519   " + body + "   alice@laptop  \r\n", want: testKey},
		{name: "comment line before", in: "# my key\n" + testKey, want: testKey},
		{name: "private key", in: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n", wantMsg: "private key; pass the .pub file"},
		{name: "garbage", in: "hello world", wantMsg: "not an SSH public key: "},
		{name: "empty", in: "", wantMsg: "not an SSH public key: "},
		{name: "options", in: `command="/bin/false" ` + testKey, wantMsg: "options"},
		{name: "two keys", in: testKey + "\n" + testKey + "\n", wantMsg: "more than one"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAuthorizedKey([]byte(tc.in))
			if tc.wantMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("ParseAuthorizedKey = %q, %v; want error containing %q", got, err, tc.wantMsg)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseAuthorizedKey = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestUserDataDatasets: each dataset is one bootcmd line (cloud-init runs
// bootcmd at every boot) mounting its virtiofs tag read-only at
// /datasets/NAME, as PyYAML (cloud-init's parser) reads it back; none
// without datasets.
func TestUserDataDatasets(t *testing.T) {
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		python = hostreq.RequireTool(t, "python3", "python3")
	}
	err := exec.Command(python, "-c", "import yaml").Run()
	hostreq.Require(t, err == nil, fmt.Sprintf("python3 PyYAML (apt-get install python3-yaml): %v", err))
	for _, tc := range []struct {
		name     string
		datasets []string
		want     []string
	}{
		{"none", nil, nil},
		{"one", []string{"imagenet"}, []string{
			"mkdir -p /datasets/imagenet && { grep -qs ' /datasets/imagenet virtiofs ' /proc/mounts || " +
				"mount -t virtiofs -o ro,nosuid,nodev imagenet /datasets/imagenet || " +
				"{ echo 'labvm: cannot mount dataset imagenet (virtiofs tag imagenet) at /datasets/imagenet' >&2; exit 1; }; }",
		}},
		{"two, in order", []string{"imagenet", "coco-2017"}, []string{
			guest.MountDatasetCommand("imagenet", "imagenet"), guest.MountDatasetCommand("coco-2017", "coco-2017"),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := testSpec()
			spec.Datasets = tc.datasets
			ud, err := UserData(spec)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(python, "-c", `import sys, yaml, json; print(json.dumps(yaml.safe_load(sys.stdin).get("bootcmd")))`)
			cmd.Stdin = strings.NewReader(string(ud))
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("PyYAML: %v\n%s", err, ud)
			}
			var got []string
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("bootcmd %s: %v", out, err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("bootcmd = %q\nwant %q", got, tc.want)
			}
		})
	}
}
