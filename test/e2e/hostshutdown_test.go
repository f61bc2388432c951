package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

// TestHostShutdownAndBoot: when the host shuts down, labvmd (run with
// --stop-instances-on-exit, as the unit's host-shutdown path does) stops
// running instances cleanly; at its next start, the ones that were running
// come back by themselves, and those created with --no-autostart stay
// stopped.
func TestHostShutdownAndBoot(t *testing.T) {
	image := requireHost(t)
	d := startDaemon(t, "--stop-instances-on-exit")
	d.must("image", "import", "tiny", image)
	d.must("create", "auto-dev", "--image", "tiny", "--size", "Standard_B1s")
	d.must("create", "manual-dev", "--image", "tiny", "--size", "Standard_B1s", "--no-autostart")
	d.must("exec", "auto-dev", "--", "sh", "-c", "echo kept > /root/marker && sync")

	t.Log("the host shuts down: both guests power off cleanly, no QEMU is left")
	start := time.Now()
	d.stop()
	if doms := d.domains(); len(doms) != 0 {
		t.Fatalf("domains left after the host shutdown: %v", doms)
	}
	if strings.Contains(d.logs.String(), "destroying") {
		t.Errorf("a guest had to be destroyed instead of shutting down:\n%s", d.logs)
	}
	t.Logf("shutdown of 2 instances took %s", time.Since(start).Round(time.Millisecond))

	t.Log("the host is back: auto-dev starts again with its data, manual-dev stays stopped")
	d.start()
	waitFor(t, 2*time.Minute, "auto-dev to be Running again", func() bool {
		return d.showInstance("auto-dev").State == api.StateRunning
	})
	if got := strings.TrimSpace(d.must("exec", "auto-dev", "--", "cat", "/root/marker")); got != "kept" {
		t.Fatalf("marker after the host restart: %q", got)
	}
	if st := d.showInstance("manual-dev").State; st != api.StateStopped {
		t.Fatalf("manual-dev is %s after the host restart, want Stopped", st)
	}
}
