package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/test/hostreq"
)

// TestSystemdIntegration runs labvmd the way systemd does, without
// systemd as PID 1: systemd-socket-activate hands it the API socket, and a
// unixgram NOTIFY_SOCKET receives what labvmd tells the service manager.
func TestSystemdIntegration(t *testing.T) {
	requireHost(t)
	activate := hostreq.RequireTool(t, "systemd-socket-activate", "systemd")
	notifyPath := filepath.Join(t.TempDir(), "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = notify.Close() }()

	d := newDaemon(t)
	// systemd-socket-activate passes on only the variables named with -E.
	d.wrap = []string{activate, "-l", d.socket, "--fdname=labvmd.socket",
		"-E", "NOTIFY_SOCKET=" + notifyPath, "-E", "WATCHDOG_USEC=1000000"}
	d.start()

	t.Log("labvmd serves calls on the socket systemd handed it")
	if out := d.must("info"); !strings.Contains(out, "Daemon:") {
		t.Fatalf("info: %s", out)
	}

	t.Log("it says READY=1 only after reconciling, then keeps the watchdog fed")
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 4096)
	for time.Now().Before(deadline) {
		_ = notify.SetReadDeadline(deadline)
		n, err := notify.Read(buf)
		if err != nil {
			break
		}
		got = append(got, string(buf[:n]))
		if countPrefix(got, "WATCHDOG=1") >= 2 {
			break
		}
	}
	ready := indexOf(got, "READY=1")
	reconciled := indexOf(got, "STATUS=reconciling instances with libvirt")
	if ready < 0 || reconciled < 0 || reconciled > ready {
		t.Fatalf("notifications %q: want STATUS=reconciling… before READY=1", got)
	}
	if countPrefix(got, "WATCHDOG=1") < 2 {
		t.Fatalf("notifications %q: want repeated WATCHDOG=1 at half of WATCHDOG_USEC", got)
	}
	if indexOfPrefix(got, "STATUS=0 instances") < 0 {
		t.Fatalf("notifications %q: want a STATUS summary of instances", got)
	}

	t.Log("on SIGTERM it says STOPPING=1 and leaves systemd's socket in place")
	d.stop()
	_ = notify.SetReadDeadline(time.Now().Add(5 * time.Second))
	stopping := false
	for !stopping {
		n, err := notify.Read(buf)
		if err != nil {
			break
		}
		stopping = string(buf[:n]) == "STOPPING=1"
	}
	if !stopping {
		t.Fatal("no STOPPING=1 after SIGTERM")
	}
	if _, err := os.Stat(d.socket); err != nil {
		t.Fatalf("labvmd removed the socket systemd owns: %v", err)
	}
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

func indexOfPrefix(list []string, p string) int {
	for i, v := range list {
		if strings.HasPrefix(v, p) {
			return i
		}
	}
	return -1
}

func countPrefix(list []string, p string) int {
	n := 0
	for _, v := range list {
		if strings.HasPrefix(v, p) {
			n++
		}
	}
	return n
}
