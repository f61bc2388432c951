package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/api"
)

// TestSetupAndStartupScripts: a setup script runs once at the first boot
// and the instance is Running only after it; a startup script runs at
// every start; a failing or hanging setup ends in SetupFailed with its
// output kept; bad scripts are refused before anything is made.
func TestSetupAndStartupScripts(t *testing.T) {
	image := requireHost(t)
	d := startDaemon(t)
	d.must("image", "import", "tiny", image)
	dir := t.TempDir()
	write := func(t *testing.T, name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	setup := write(t, "setup.sh", "#!/bin/sh\necho installing things\necho ran >> /root/setup-ran\n")
	startup := write(t, "startup.sh", "echo boot >> /root/startups\necho startup done\n")

	d.chapter(t, "Alice creates an instance with both scripts; create returns once setup has run", func(t *testing.T) {
		d.must("create", "alice-dev", "--image", "tiny", "--size", "Standard_B1s", "--setup-script", setup, "--startup-script", startup)
		inst := d.showInstance("alice-dev")
		if inst.State != api.StateRunning || inst.SetupExit == nil || *inst.SetupExit != 0 {
			t.Fatalf("after create: state %s, setup exit %v", inst.State, inst.SetupExit)
		}
		if got := d.must("exec", "alice-dev", "--", "cat", "/root/setup-ran"); got != "ran\n" {
			t.Fatalf("setup marker: %q", got)
		}
		if got := d.must("logs", "alice-dev", "--setup"); !strings.Contains(got, "installing things") {
			t.Fatalf("logs --setup: %q", got)
		}
		if got := d.must("exec", "alice-dev", "--", "cat", "/root/startups"); got != "boot\n" {
			t.Fatalf("startup marker after the first boot: %q", got)
		}
	})

	d.chapter(t, "a restart runs the startup script again, never the setup script", func(t *testing.T) {
		d.must("restart", "alice-dev")
		if got := d.must("exec", "alice-dev", "--", "cat", "/root/setup-ran"); got != "ran\n" {
			t.Fatalf("setup ran again: %q", got)
		}
		if got := d.must("exec", "alice-dev", "--", "cat", "/root/startups"); got != "boot\nboot\n" {
			t.Fatalf("startup marker after a restart: %q", got)
		}
		if got := d.must("logs", "alice-dev", "--startup"); !strings.Contains(got, "startup done") {
			t.Fatalf("logs --startup: %q", got)
		}
		if got := d.must("logs", "alice-dev"); !strings.Contains(got, "alice-dev") {
			t.Fatalf("console log does not mention the instance:\n%s", got)
		}
	})

	d.chapter(t, "a failing setup script ends in SetupFailed with its exit code and output", func(t *testing.T) {
		failing := write(t, "fail.sh", "echo about to fail\nexit 3\n")
		d.mustFail("exited with 3", "create", "bob-dev", "--image", "tiny", "--size", "Standard_B1s", "--setup-script", failing)
		bob := d.showInstance("bob-dev")
		if bob.State != api.StateSetupFailed || !strings.Contains(bob.StateReason, "exited with 3") {
			t.Fatalf("failing setup: %s %q", bob.State, bob.StateReason)
		}
		if got := d.must("logs", "bob-dev", "--setup"); !strings.Contains(got, "about to fail") {
			t.Fatalf("failed setup's output: %q", got)
		}
	})

	d.chapter(t, "a hanging setup script fails at its timeout", func(t *testing.T) {
		hang := write(t, "hang.sh", "sleep 600\n")
		d.mustFail("did not finish within 3s", "create", "carl-dev", "--image", "tiny", "--size", "Standard_B1s", "--setup-script", hang, "--script-timeout", "3s")
	})

	d.chapter(t, "scripts that are too big or not text are refused, and nothing is made", func(t *testing.T) {
		big := write(t, "big.sh", strings.Repeat("# padding\n", 7000))
		d.mustFail("64 KiB", "create", "dan-dev", "--image", "tiny", "--size", "Standard_B1s", "--setup-script", big)
		bin := write(t, "bin.sh", "\x7fELF\x00\x01\x02")
		d.mustFail("not valid UTF-8 text", "create", "dan-dev", "--image", "tiny", "--size", "Standard_B1s", "--startup-script", bin)
		d.mustFail("not found", "show", "dan-dev")
		d.mustFail("no startup script", "logs", "bob-dev", "--startup")
	})

}
