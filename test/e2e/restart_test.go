package e2e

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

// TestRestartsNeverTouchVMs: killing labvmd leaves guests running and the
// next labvmd adopts them; restarting libvirtd under a running labvmd makes
// calls fail fast with a clear Unavailable, and they work again once
// libvirtd is back, with the guest still running throughout.
func TestRestartsNeverTouchVMs(t *testing.T) {
	image := requireHost(t)
	d := startDaemon(t)
	d.must("image", "import", "tiny", image)
	d.must("create", "steady-dev", "--image", "tiny", "--size", "Standard_B1s")
	uptime := func() float64 {
		t.Helper()
		out := d.must("exec", "steady-dev", "--", "cut", "-d", " ", "-f1", "/proc/uptime")
		v, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
		if err != nil {
			t.Fatalf("uptime %q: %v", out, err)
		}
		return v
	}
	qemuPID := func() string {
		out, _ := exec.Command("pgrep", "-f", "guest="+d.showInstance("steady-dev").Domain+",").Output()
		return strings.TrimSpace(string(out))
	}
	before, pid := uptime(), qemuPID()
	if pid == "" {
		t.Fatal("no QEMU process for the instance")
	}

	t.Log("kill -9 labvmd and start it again: the guest keeps running and is adopted")
	d.kill()
	time.Sleep(time.Second)
	d.start()
	if inst := d.showInstance("steady-dev"); inst.State != api.StateRunning {
		t.Fatalf("after a daemon restart the instance is %s (%s)", inst.State, inst.StateReason)
	}
	if after := uptime(); after <= before {
		t.Fatalf("guest uptime went from %.1f to %.1f: it was restarted", before, after)
	}
	if qemuPID() != pid {
		t.Fatal("the QEMU process changed across a daemon restart")
	}

	t.Log("libvirtd goes away: calls that need it fail fast and say so")
	stopLibvirtd(t)
	t.Cleanup(func() { startLibvirtd(t) })
	start := time.Now()
	r := d.labvm("exec", "steady-dev", "--", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "libvirtd") {
		t.Fatalf("exec with libvirtd down: exit %d\n%s", r.code, r.stderr)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("exec with libvirtd down took %s; it must fail fast", took)
	}
	d.must("list") // the store still answers

	t.Log("libvirtd is back: the daemon reconnects by itself and the guest never stopped")
	startLibvirtd(t)
	waitFor(t, 30*time.Second, "exec after libvirtd restart", func() bool {
		return d.labvm("exec", "steady-dev", "--", "true").code == 0
	})
	if qemuPID() != pid {
		t.Fatal("the QEMU process changed across a libvirtd restart")
	}
	d.must("stop", "steady-dev")
	d.must("delete", "steady-dev", "--yes")
}

func stopLibvirtd(t *testing.T) {
	t.Helper()
	_ = exec.Command("pkill", "-x", "libvirtd").Run()
	waitFor(t, 30*time.Second, "libvirtd to exit", func() bool {
		return exec.Command("pgrep", "-x", "libvirtd").Run() != nil
	})
}

func startLibvirtd(t *testing.T) {
	t.Helper()
	if exec.Command("pgrep", "-x", "libvirtd").Run() == nil {
		return
	}
	if out, err := exec.Command("libvirtd", "-d").CombinedOutput(); err != nil {
		t.Fatalf("libvirtd -d: %v\n%s", err, out)
	}
	waitFor(t, 30*time.Second, "libvirtd to answer", func() bool {
		return exec.Command("virsh", "-c", "qemu:///system", "version").Run() == nil
	})
}
