package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/labvm/labvm/daemon/api"
)

const (
	hostKeyA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLS7zdwGBkYwO37Tml9s4TdQV+TFzXex03LhD6Hcy2e"
	hostKeyB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8zrXJh6CEkMLasaVLJs+5HcmtP0My6FSaq0ynGD1H+"
)

var sshInst = api.Instance{Name: "alice-dev", ID: "0123456789abcdef", GuestUser: "alice", SSH: true}

var (
	legacy = sshAccess{self: "/usr/bin/labvm", target: []string{"--socket", "/run/labvm/labvm.sock"}}
	pinned = sshAccess{self: "/usr/bin/labvm", target: []string{"--socket", "/run/labvm/labvm.sock"}, knownHosts: "/home/alice/.config/labvm/known_hosts"}
)

func TestSSHArgs(t *testing.T) {
	const proxy = "ProxyCommand=/usr/bin/labvm --socket /run/labvm/labvm.sock tunnel alice-dev 22"
	tests := []struct {
		name  string
		acc   sshAccess
		extra []string
		want  []string
	}{
		{
			name: "pinned host key: strict checking against labvm's known_hosts",
			acc:  pinned,
			want: []string{
				"-o", proxy,
				"-o", "HostKeyAlias=labvm-alice-dev-01234567",
				"-o", "StrictHostKeyChecking=yes",
				"-o", "UserKnownHostsFile=/home/alice/.config/labvm/known_hosts",
				"-l", "alice", "alice-dev",
			},
		},
		{
			name:  "user options and a command follow the destination",
			acc:   pinned,
			extra: []string{"-o", "StrictHostKeyChecking=no", "-i", "/k/id", "hostname"},
			want: []string{
				"-o", proxy,
				"-o", "HostKeyAlias=labvm-alice-dev-01234567",
				"-o", "StrictHostKeyChecking=yes",
				"-o", "UserKnownHostsFile=/home/alice/.config/labvm/known_hosts",
				"-l", "alice", "alice-dev", "-o", "StrictHostKeyChecking=no", "-i", "/k/id", "hostname",
			},
		},
		{
			name: "no key recorded: accept-new in the user's own known_hosts",
			acc:  legacy,
			want: []string{
				"-o", proxy,
				"-o", "HostKeyAlias=labvm-alice-dev-01234567",
				"-o", "StrictHostKeyChecking=accept-new",
				"-l", "alice", "alice-dev",
			},
		},
		{
			name: "paths with spaces, quotes and percent signs survive sh and ssh",
			acc:  sshAccess{self: "/opt/my tools/labvm", target: []string{"--socket", "/tmp/it's 100%.sock"}, knownHosts: `/home/a "b"/100%/known_hosts`},
			want: []string{
				"-o", `ProxyCommand='/opt/my tools/labvm' --socket '/tmp/it'\''s 100%%.sock' tunnel alice-dev 22`,
				"-o", "HostKeyAlias=labvm-alice-dev-01234567",
				"-o", "StrictHostKeyChecking=yes",
				"-o", `UserKnownHostsFile="/home/a \"b\"/100%%/known_hosts"`,
				"-l", "alice", "alice-dev",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sshArgs(tt.acc, sshInst, tt.extra); !slices.Equal(got, tt.want) {
				t.Fatalf("sshArgs =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestSSHConfig(t *testing.T) {
	tests := []struct {
		name string
		acc  sshAccess
		inst api.Instance
		want string
	}{
		{"alice's instance, key pinned", pinned, sshInst, `# labvm instance alice-dev (id 0123456789abcdef), written by ` + "`labvm ssh-config`" + `
Host alice-dev
    HostName alice-dev
    User alice
    HostKeyAlias labvm-alice-dev-01234567
    ProxyCommand /usr/bin/labvm --socket /run/labvm/labvm.sock tunnel alice-dev 22
    StrictHostKeyChecking yes
    UserKnownHostsFile /home/alice/.config/labvm/known_hosts
`},
		{"created by root before host keys", legacy, api.Instance{Name: "ci-box", ID: "ffffffff00000000", GuestUser: "labvm", SSH: true}, `# labvm instance ci-box (id ffffffff00000000), written by ` + "`labvm ssh-config`" + `
Host ci-box
    HostName ci-box
    User labvm
    HostKeyAlias labvm-ci-box-ffffffff
    ProxyCommand /usr/bin/labvm --socket /run/labvm/labvm.sock tunnel ci-box 22
    StrictHostKeyChecking accept-new
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sshConfig(tt.acc, tt.inst); got != tt.want {
				t.Fatalf("sshConfig =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestSSHPathOption(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "/home/alice/.config/labvm/known_hosts", want: "/home/alice/.config/labvm/known_hosts"},
		{in: "/home/al ice/kh", want: `"/home/al ice/kh"`},
		{in: `/x/a\b`, want: `"/x/a\\b"`},
		{in: "/x/100%", want: "/x/100%%"},
		{in: "/x/#y", want: `"/x/#y"`},
		{in: "/x/${HOME}/kh", wantErr: "cannot be passed to ssh"},
		{in: "/x/\n/kh", wantErr: "cannot be passed to ssh"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := sshPathOption(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("= %q, %v; want an error mentioning %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("= %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestWriteKnownHosts(t *testing.T) {
	const alias = "labvm-alice-dev-01234567"
	tests := []struct {
		name    string
		old     string // "" = no file
		keys    []string
		want    string
		wantErr string
	}{
		{
			name: "first key in a new file",
			keys: []string{hostKeyA + " root@guest"},
			want: alias + " " + hostKeyA + "\n",
		},
		{
			name: "a re-keyed alias loses its old lines, others stay",
			old: "# labvm's known hosts\n" +
				alias + " " + hostKeyB + "\n" +
				"labvm-bob-dev-89abcdef " + hostKeyB + "\n" +
				"other," + alias + " ssh-rsa AAAAB3NzaC1yc2E\n" +
				"@revoked " + alias + " " + hostKeyB + "\n" +
				"labvm-alice-dev-0123456 " + hostKeyB + "\n",
			keys: []string{hostKeyA},
			want: "# labvm's known hosts\n" +
				"labvm-bob-dev-89abcdef " + hostKeyB + "\n" +
				"labvm-alice-dev-0123456 " + hostKeyB + "\n" +
				alias + " " + hostKeyA + "\n",
		},
		{
			name: "two keys, file without a final newline",
			old:  "labvm-bob-dev-89abcdef " + hostKeyB,
			keys: []string{hostKeyA, hostKeyB},
			want: "labvm-bob-dev-89abcdef " + hostKeyB + "\n" + alias + " " + hostKeyA + "\n" + alias + " " + hostKeyB + "\n",
		},
		{
			name: "the same key again changes nothing",
			old:  alias + " " + hostKeyA + "\n",
			keys: []string{hostKeyA},
			want: alias + " " + hostKeyA + "\n",
		},
		{
			name:    "a bad key from the daemon writes nothing",
			old:     alias + " " + hostKeyA + "\n",
			keys:    []string{"ssh-ed25519 not-base64"},
			want:    alias + " " + hostKeyA + "\n",
			wantErr: "host key 1 of " + alias,
		},
		{
			name:    "a key smuggling a second line writes nothing",
			keys:    []string{hostKeyA + "\n* " + hostKeyB},
			wantErr: "spans several lines",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "labvm", "known_hosts")
			if tt.old != "" {
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(tt.old), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := writeKnownHosts(path, alias, tt.keys)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v; want one mentioning %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			got, rerr := os.ReadFile(path)
			if tt.want == "" {
				if rerr == nil {
					t.Fatalf("file written:\n%s", got)
				}
				return
			}
			if string(got) != tt.want {
				t.Fatalf("known_hosts =\n%s\nwant\n%s", got, tt.want)
			}
			st, err := os.Stat(path)
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("known_hosts mode %v, %v; want 0600", st.Mode().Perm(), err)
			}
			if st, err := os.Stat(filepath.Dir(path)); err != nil || (tt.old == "" && st.Mode().Perm() != 0o700) {
				t.Fatalf("directory mode %v, %v; want 0700", st.Mode().Perm(), err)
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			for _, e := range entries {
				if e.Name() != "known_hosts" && e.Name() != "known_hosts.lock" {
					t.Fatalf("left behind %s", e.Name())
				}
			}
		})
	}
}

// TestWriteKnownHostsConcurrently has many labvm processes' worth of
// writers record different aliases at once: none may be lost.
func TestWriteKnownHostsConcurrently(t *testing.T) {
	path := filepath.Join(t.TempDir(), "known_hosts")
	var wg sync.WaitGroup
	const n = 20
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := writeKnownHosts(path, "labvm-box"+string(rune('a'+i))+"-01234567", []string{hostKeyA}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(got), "\n"); lines != n {
		t.Fatalf("%d lines after %d concurrent writers:\n%s", lines, n, got)
	}
}

func TestHostKeyWatch(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   bool
	}{
		{"a clean session", []string{"Warning: Permanently added 'x' (ED25519) to the list of known hosts.\r\n"}, false},
		{"a mismatch in one write", []string{"@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n…\r\nHost key verification failed.\r\n"}, true},
		{"the marker split across writes", []string{"No ED25519 host key is known for x and you have requested strict checking.\r\nHost key ver", "ification failed.\r\n"}, true},
		{"split byte by byte", strings.Split("Host key verification failed.", ""), true},
		{"only part of it", []string{"Host key verification"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			w := &hostKeyWatch{w: &out}
			for _, s := range tt.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if w.failed() != tt.want {
				t.Fatalf("failed() = %v, want %v", w.failed(), tt.want)
			}
			if out.String() != strings.Join(tt.writes, "") {
				t.Fatalf("passed through %q", out.String())
			}
		})
	}
}

func TestHostKeyMismatchSaysWhatHappened(t *testing.T) {
	inst := sshInst
	inst.SSHHostKeys = []string{hostKeyA}
	tests := []struct {
		name string
		acc  sshAccess
		inst api.Instance
		want []string
	}{
		{"pinned", pinned, inst, []string{"other than the one labvmd gave it", hostKeyA, "impersonating", "labvm console alice-dev", pinned.knownHosts}},
		{"not pinned", legacy, sshInst, []string{"no host key on record", "ssh-keygen -R labvm-alice-dev-01234567", "recreate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			report(&b, hostKeyMismatch(tt.inst, tt.acc))
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Fatalf("report:\n%s\ndoes not mention %q", b.String(), w)
				}
			}
		})
	}
}
