package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
