package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
)

// TestInstanceLifecycle is the foundation's story: Alice gets a VM, uses
// it, stops it (deallocated, disk kept), starts it again with her data,
// restarts it and finally deletes it, leaving nothing behind.
func TestInstanceLifecycle(t *testing.T) {
	image := requireHost(t)
	d := startDaemon(t)

	t.Log("an admin imports the test cloud image, checksum verified")
	d.must("image", "import", "tiny", image, "--sha256", readSHA256(t, image))
	var imgs []api.Image
	d.jsonOut(&imgs, "image", "list")
	if len(imgs) != 1 || imgs[0].Name != "tiny" || imgs[0].Format != "qcow2" {
		t.Fatalf("image list = %+v", imgs)
	}

	t.Log("Alice creates her instance and the command waits until it is Running")
	out := d.must("create", "alice-dev", "--image", "tiny", "--size", "Standard_B1s")
	if !strings.Contains(out, string(api.StateRunning)) {
		t.Errorf("create output does not say Running: %q", out)
	}
	var inst api.Instance
	d.jsonOut(&inst, "show", "alice-dev")
	if inst.State != api.StateRunning || inst.Size.Name != "Standard_B1s" || inst.Image != "tiny" {
		t.Fatalf("show = %+v", inst)
	}
	ip := netip.MustParseAddr(inst.IP)
	if !d.subnet.Contains(ip) {
		t.Fatalf("IP %s outside the VNet's subnet %s", ip, d.subnet)
	}
	if inst.DiskVirtual != 120<<30 {
		t.Fatalf("disk virtual size = %d, want 120 GiB", inst.DiskVirtual)
	}
	if inst.DiskUsed <= 0 || inst.DiskUsed > 64<<20 {
		t.Errorf("disk used on host = %d bytes; a thin overlay should be small", inst.DiskUsed)
	}
	disk := filepath.Join(d.dataDir, "instances", inst.ID, "disk.qcow2")

	d.chapter(t, "the list shows it, as a table and as JSON", func(t *testing.T) {
		if out := d.must("list"); !strings.Contains(out, "alice-dev") || !strings.Contains(out, string(api.StateRunning)) {
			t.Errorf("list table:\n%s", out)
		}
		var list []api.Instance
		d.jsonOut(&list, "list")
		if len(list) != 1 || list[0].Name != "alice-dev" {
			t.Fatalf("list = %+v", list)
		}
	})

	d.chapter(t, "a second create with the same name is refused and changes nothing", func(t *testing.T) {
		d.mustFail("already exists", "create", "alice-dev", "--image", "tiny", "--size", "Standard_B1s")
		if n := len(d.instanceDirs()); n != 1 {
			t.Fatalf("%d instance dirs after a refused duplicate, want 1", n)
		}
	})

	d.chapter(t, "inside the guest: the hostname is the instance name and the disk is 120 GiB", func(t *testing.T) {
		if got := strings.TrimSpace(d.must("exec", "alice-dev", "--", "cat", "/etc/hostname")); got != "alice-dev" {
			t.Fatalf("/etc/hostname in the guest = %q", got)
		}
		if got := strings.TrimSpace(d.must("exec", "alice-dev", "--", "cat", "/sys/block/vda/size")); got != "251658240" {
			t.Fatalf("guest's vda is %s sectors, want 251658240 (120 GiB)", got)
		}
		r := d.labvm("exec", "alice-dev", "--", "sh", "-c", "echo oops >&2; exit 3")
		if r.code != 3 || !strings.Contains(r.stderr, "oops") {
			t.Fatalf("exec exit code/stderr not passed through: %+v", r)
		}
	})

	t.Log("she writes a file and syncs it")
	d.must("exec", "alice-dev", "--", "sh", "-c", "echo labvm-marker-42 > /root/marker && sync")

	d.chapter(t, "starting a running instance is a Conflict", func(t *testing.T) {
		d.mustFail("already Running", "start", "alice-dev")
	})

	d.chapter(t, "stop deallocates: no domain, no QEMU process, the disk stays", func(t *testing.T) {
		d.must("stop", "alice-dev")
		d.jsonOut(&inst, "show", "alice-dev")
		if inst.State != api.StateStopped {
			t.Fatalf("state after stop = %s", inst.State)
		}
		if doms := d.domains(); len(doms) != 0 {
			t.Fatalf("domains after stop: %v", doms)
		}
		if qemuRunning(inst.Domain) {
			t.Fatal("a QEMU process is still running after stop")
		}
		if _, err := os.Stat(disk); err != nil {
			t.Fatalf("disk gone after stop: %v", err)
		}
		d.mustFail("already Stopped", "stop", "alice-dev")
		d.mustFail(string(api.StateStopped), "exec", "alice-dev", "--", "true")
	})

	d.chapter(t, "start: same disk, same IP, same data", func(t *testing.T) {
		d.must("start", "alice-dev")
		d.jsonOut(&inst, "show", "alice-dev")
		if inst.State != api.StateRunning || inst.IP != ip.String() {
			t.Fatalf("after start: state %s ip %s (was %s)", inst.State, inst.IP, ip)
		}
		if got := strings.TrimSpace(d.must("exec", "alice-dev", "--", "cat", "/root/marker")); got != "labvm-marker-42" {
			t.Fatalf("marker after stop/start = %q", got)
		}
	})

	d.chapter(t, "restart brings it back Running with the data", func(t *testing.T) {
		d.must("restart", "alice-dev")
		d.jsonOut(&inst, "show", "alice-dev")
		if inst.State != api.StateRunning {
			t.Fatalf("after restart: %s", inst.State)
		}
		if got := strings.TrimSpace(d.must("exec", "alice-dev", "--", "cat", "/root/marker")); got != "labvm-marker-42" {
			t.Fatalf("marker after restart = %q", got)
		}
	})

	d.chapter(t, "the image is in use and cannot be deleted", func(t *testing.T) {
		d.mustFail("used by alice-dev", "image", "delete", "tiny")
	})

	d.chapter(t, "delete without a terminal needs --yes; with it, everything is gone", func(t *testing.T) {
		d.mustFail("--yes", "delete", "alice-dev")
		d.must("delete", "alice-dev", "--yes")
		d.mustFail("not found", "show", "alice-dev")
		if doms := d.domains(); len(doms) != 0 {
			t.Fatalf("domains after delete: %v", doms)
		}
		if qemuRunning(inst.Domain) {
			t.Fatal("QEMU still running after delete")
		}
		if dirs := d.instanceDirs(); len(dirs) != 0 {
			t.Fatalf("instance files left after delete: %v", dirs)
		}
	})

	d.chapter(t, "the address went back to the pool", func(t *testing.T) {
		d.stop()
		st, err := store.Open(filepath.Join(d.dataDir, "labvm.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = st.Close() }()
		if err := st.View(func(tx *store.Tx) error {
			allocs, err := tx.IPAllocations("default")
			if err != nil || len(allocs) != 0 {
				t.Errorf("IP allocations after delete = %v, %v; want none", allocs, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})

}
