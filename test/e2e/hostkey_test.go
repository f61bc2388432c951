package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
)

// TestSSHHostKeyIsPinned: labvmd makes Alice's instance's host key and
// gives it to the guest, so her first `labvm ssh` already checks it.
// Then something in the guest swaps the SSH server's key: ssh refuses,
// and labvm says the guest may be impersonated.
func TestSSHHostKeyIsPinned(t *testing.T) {
	image := requireHost(t)
	d := startDaemon(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "id")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	d.must("image", "import", "tiny", image, "--sha256", readSHA256(t, image))
	d.must("create", "pin-dev", "--image", "tiny", "--size", "Standard_B1s", "--ssh-key", key+".pub")
	var inst api.Instance
	d.jsonOut(&inst, "show", "pin-dev")
	if len(inst.SSHHostKeys) == 0 {
		t.Fatal("labvmd recorded no SSH host key for the instance (ssh_host_keys is empty in `labvm show -o json`)")
	}
	waitForPort(t, client.New(d.socket), "pin-dev", 22)
	alias := "labvm-pin-dev-" + inst.ID[:8]
	knownHosts := filepath.Join(d.configHome(), "labvm", "known_hosts")
	sshOpts := []string{"-i", key, "-o", "BatchMode=yes"}

	t.Log("the first login already checks the key labvmd made, strictly")
	r := d.labvm(append([]string{"ssh", "pin-dev", "--"}, append(sshOpts, "hostname")...)...)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "pin-dev" {
		t.Fatalf("labvm ssh pin-dev -- hostname: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stderr, "Permanently added") || strings.Contains(r.stderr, "Warning") {
		t.Fatalf("ssh learned a key instead of checking the pinned one:\n%s", r.stderr)
	}
	b, err := os.ReadFile(knownHosts)
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for _, k := range inst.SSHHostKeys {
		want.WriteString(alias + " " + k + "\n")
	}
	if string(b) != want.String() {
		t.Fatalf("labvm's known_hosts:\n%s\nwant:\n%s", b, want.String())
	}
	if st, err := os.Stat(knownHosts); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("known_hosts: %v, %v; want mode 0600", st, err)
	}

	t.Log("plain ssh with the ssh-config block checks the same key")
	config := filepath.Join(dir, "config")
	if err := os.WriteFile(config, []byte(d.must("ssh-config", "pin-dev")), 0o600); err != nil {
		t.Fatal(err)
	}
	ssh := exec.Command("ssh", append([]string{"-F", config}, append(sshOpts, "pin-dev", "true")...)...)
	ssh.Env = append(os.Environ(), d.cliEnv()...)
	if b, err := ssh.CombinedOutput(); err != nil {
		t.Fatalf("ssh -F (ssh-config output) pin-dev true: %v\n%s", err, b)
	}

	t.Log("something in the guest swaps the SSH server's host key")
	d.must("exec", "pin-dev", "--", "sh", "-c",
		"dropbearkey -t ed25519 -f /tmp/evil_key >/dev/null && mv /tmp/evil_key /etc/dropbear/dropbear_ed25519_host_key && rm -f /etc/dropbear/dropbear_*_host_key.pub; killall dropbear")
	waitForPort(t, client.New(d.socket), "pin-dev", 22)

	r = d.mustFail("other than the one labvmd gave it", append([]string{"ssh", "pin-dev", "--"}, append(sshOpts, "hostname")...)...)
	t.Logf("labvm ssh to the impersonated guest said:\n%s", r.stderr)
	for _, w := range []string{"Host key verification failed.", "impersonating", "labvm console pin-dev"} {
		if !strings.Contains(r.stderr, w) {
			t.Fatalf("labvm ssh to the impersonated guest: stderr does not mention %q:\n%s", w, r.stderr)
		}
	}
	if strings.Contains(r.stdout, "pin-dev") {
		t.Fatalf("the command ran on the impersonated guest: %s", r.stdout)
	}
}
