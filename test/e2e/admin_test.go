package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/test/hostreq"
)

// TestDataDirQEMUCannotReach: an admin points --data-dir below a 0700
// directory. labvmd refuses to start, names the directory and what to
// change, and creates nothing (no data dir, no socket).
func TestDataDirQEMUCannotReach(t *testing.T) {
	requireHost(t)
	d := newDaemon(t)
	private := filepath.Join(filepath.Dir(d.socket), "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	d.dataDir = filepath.Join(private, "data")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bins.labvmd, "--config", "/nonexistent",
		"--socket", d.socket, "--data-dir", d.dataDir,
		"--bridge", d.bridge, "--subnet", d.subnet.String(),
		"--firewall-table", d.table, "--bridge-prefix", d.brPrefix).CombinedOutput()
	if err == nil {
		t.Fatalf("labvmd started with a data dir QEMU cannot reach:\n%s", out)
	}
	for _, want := range []string{private, "libvirt-qemu", "chmod o+x " + private} {
		if !strings.Contains(string(out), want) {
			t.Errorf("refusal does not say %q:\n%s", want, out)
		}
	}
	for _, p := range []string{d.dataDir, d.socket} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s exists after the refused start (%v)", p, err)
		}
	}

	// Once the admin does what it says, the same command starts.
	if err := os.Chmod(private, 0o701); err != nil {
		t.Fatal(err)
	}
	d.start()
	d.must("info")
}

// TestActivatedSocketAnyName: labvmd serves a single socket systemd hands
// it whatever the socket unit calls it, and refuses several none of which
// is labvmd.socket with one message listing them.
func TestActivatedSocketAnyName(t *testing.T) {
	requireHost(t)
	activate := hostreq.RequireTool(t, "systemd-socket-activate", "systemd")

	d := newDaemon(t)
	d.wrap = []string{activate, "-l", d.socket, "--fdname=api.socket"}
	d.start()
	if out := d.must("info"); !strings.Contains(out, "Daemon:") {
		t.Fatalf("info: %s", out)
	}
	d.stop()

	other := filepath.Join(filepath.Dir(d.socket), "other.sock")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, activate, "-l", other, "-l", d.socket+".2", "--fdname=a.socket:b.socket",
		bins.labvmd, "--config", "/nonexistent", "--data-dir", d.dataDir,
		"--bridge", d.bridge, "--subnet", d.subnet.String(),
		"--firewall-table", d.table, "--bridge-prefix", d.brPrefix)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// systemd-socket-activate starts labvmd at the first connection.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", other); err == nil {
			c.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	err := cmd.Wait()
	want := "systemd passed 2 sockets (a.socket, b.socket) and none is named labvmd.socket"
	if err == nil || !strings.Contains(out.String(), want) {
		t.Fatalf("labvmd with two unnamed sockets: %v, output:\n%s\nwant a refusal saying %q", err, out.String(), want)
	}
	if n := strings.Count(out.String(), "systemd passed"); n != 1 {
		t.Errorf("refusal said %d times, want once:\n%s", n, out.String())
	}
}
