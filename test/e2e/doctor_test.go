package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/network"
)

// TestDoctorRebuild loses the database under two instances and brings
// them back from their manifests with `labvm doctor --rebuild`; then it
// leaves junk in the data dir and the store for `labvm doctor --repair`,
// and finally shows that a corrupt database stops labvmd with advice.
func TestDoctorRebuild(t *testing.T) {
	image := requireHost(t)
	d := startDaemon(t)
	d.must("image", "import", "tiny", image, "--sha256", readSHA256(t, image))
	d.must("create", "keep-run", "--image", "tiny", "--size", "Standard_B1s")
	d.must("create", "keep-stop", "--image", "tiny", "--size", "Standard_B2s", "--assign-to", "nobody")
	// The idle shutdown is set apart from the record (its own bucket); the
	// stop's state change writes the manifest after it, which must keep it.
	d.must("idle-shutdown", "keep-stop", "2h")
	d.must("stop", "keep-stop")
	var before []api.Instance
	d.jsonOut(&before, "list")
	if i := slices.IndexFunc(before, func(in api.Instance) bool { return in.Name == "keep-stop" }); i < 0 || before[i].IdleShutdown.Limit != "2h" {
		t.Fatalf("keep-stop before the loss: %+v, want idle shutdown 2h", before)
	}

	t.Log("the database is lost; labvmd starts empty and doctor sees what is left")
	d.stop()
	if err := os.Remove(filepath.Join(d.dataDir, "labvm.db")); err != nil {
		t.Fatal(err)
	}
	d.start()
	var list []api.Instance
	if d.jsonOut(&list, "list"); len(list) != 0 {
		t.Fatalf("instances with an empty database: %+v", list)
	}
	var rep api.DoctorReport
	d.jsonOut(&rep, "doctor")
	for _, kind := range []string{api.FindingUnknownDomain, api.FindingOrphanDir, api.FindingOrphanFile} {
		if !slices.ContainsFunc(rep.Findings, func(f api.Finding) bool { return f.Kind == kind }) {
			t.Errorf("doctor misses a %s finding: %+v", kind, rep.Findings)
		}
	}
	if slices.ContainsFunc(rep.Findings, func(f api.Finding) bool { return f.Repairable && f.Kind != api.FindingPartialFile }) {
		t.Errorf("doctor would repair away recoverable instances: %+v", rep.Findings)
	}

	t.Log("--rebuild brings every instance back with its owner, size, address, idle shutdown and disk")
	out := d.must("doctor", "--rebuild")
	if !strings.Contains(out, "recovered instance keep-run") || !strings.Contains(out, "No problems remain") {
		t.Errorf("doctor --rebuild says:\n%s", out)
	}
	var after []api.Instance
	d.jsonOut(&after, "list")
	if len(after) != len(before) {
		t.Fatalf("after rebuild: %+v, want %+v", after, before)
	}
	for i, b := range before {
		a := after[i]
		if a.ID != b.ID || a.Owner != b.Owner || a.Creator != b.Creator || a.Size != b.Size || a.IP != b.IP || a.Image != b.Image || a.ImageDigest != b.ImageDigest ||
			a.IdleShutdown.Limit != b.IdleShutdown.Limit {
			t.Errorf("rebuilt %+v\nwas     %+v", a, b)
		}
		if a.State != b.State {
			t.Errorf("%s rebuilt as %s, was %s", a.Name, a.State, b.State)
		}
		if _, err := os.Stat(filepath.Join(d.dataDir, "instances", a.ID, "disk.qcow2")); err != nil {
			t.Errorf("disk of %s: %v", a.Name, err)
		}
	}
	var imgs []api.Image
	if d.jsonOut(&imgs, "image", "list"); len(imgs) != 1 || imgs[0].Name != "tiny" || imgs[0].Digest != before[0].ImageDigest {
		t.Errorf("images after rebuild: %+v", imgs)
	}
	t.Log("a second rebuild overwrites nothing, and the rebuilt instance starts")
	if out := d.must("doctor", "--rebuild"); !strings.Contains(out, "Nothing to do") {
		t.Errorf("second rebuild:\n%s", out)
	}
	d.must("start", "keep-stop")

	d.chapter(t, "junk in the data dir and the store: doctor reports it, --repair removes it", func(t *testing.T) {
		d.stop()
		junkDir := filepath.Join(d.dataDir, "instances", "0123456789abcdef")
		junkImport := filepath.Join(d.dataDir, "images", ".import-42")
		for _, p := range []string{junkDir, junkImport} {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		st, err := store.Open(filepath.Join(d.dataDir, "labvm.db"))
		if err != nil {
			t.Fatal(err)
		}
		b := d.subnet.Addr().As4()
		b[3] = 250 // far above what the two instances took
		orphanIP := netip.AddrFrom4(b)
		if err := st.Update(func(tx *store.Tx) error { return tx.AllocateIP("default", orphanIP, "feedfacefeedface") }); err != nil {
			t.Fatal(err)
		}
		_ = st.Close()
		d.start()
		d.jsonOut(&rep, "doctor")
		for _, want := range []string{junkDir, junkImport, "default/" + orphanIP.String()} {
			if !slices.ContainsFunc(rep.Findings, func(f api.Finding) bool { return f.Target == want && f.Repairable }) {
				t.Errorf("doctor does not offer to repair %s: %+v", want, rep.Findings)
			}
		}
		out = d.must("doctor", "--repair")
		for _, want := range []string{"removed " + junkDir, "removed " + junkImport, "released address default/" + orphanIP.String(), "No problems remain"} {
			if !strings.Contains(out, want) {
				t.Errorf("doctor --repair does not say %q:\n%s", want, out)
			}
		}
		d.jsonOut(&after, "list")
		if len(after) != 2 || after[0].State != api.StateRunning || after[1].State != api.StateRunning {
			t.Errorf("instances after repair: %+v", after)
		}
	})

	d.chapter(t, "a corrupt database stops labvmd with the way out", func(t *testing.T) {
		d.stop()
		db := filepath.Join(d.dataDir, "labvm.db")
		if err := os.WriteFile(db, bytes.Repeat([]byte("not a bbolt file "), 4096), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bins.labvmd, "--config", "/nonexistent", "--socket", d.socket, "--data-dir", d.dataDir,
			"--bridge", d.bridge, "--subnet", d.subnet.String(), "--accel", "tcg", "--phone-home-port", "0",
			"--firewall-table", d.table, "--bridge-prefix", d.brPrefix)
		msg, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("labvmd started on a corrupt database:\n%s", msg)
		}
		for _, want := range []string{"corrupt", "move it aside", "labvm doctor --rebuild"} {
			if !strings.Contains(string(msg), want) {
				t.Errorf("labvmd's refusal does not say %q:\n%s", want, msg)
			}
		}
	})

}

// TestDoctorFirewallOrphan: a firewall table whose recorded owner (a
// labvmd process) is gone, and whose guests are gone too, is reported
// with the nft commands that delete it, and `labvm doctor --repair`
// deletes it; the daemon's own table is never reported. The tables are
// empty (no chains): nothing on the host is filtered by them meanwhile.
func TestDoctorFirewallOrphan(t *testing.T) {
	requireHost(t)
	d := startDaemon(t)
	table := "lvt_orph_" + randHex(4)
	reg := network.FirewallRegistry{Dir: network.DefaultFirewallOwners}
	t.Cleanup(func() {
		for _, fam := range []string{"inet", "bridge"} {
			_ = exec.Command("nft", "delete", "table", fam, table).Run()
		}
		_ = reg.Forget(table)
	})
	for _, fam := range []string{"inet", "bridge"} {
		if out, err := exec.Command("nft", "add", "table", fam, table).CombinedOutput(); err != nil {
			t.Fatalf("nft add table %s %s: %v\n%s", fam, table, err, out)
		}
	}
	// The owner ran, and is gone.
	sleeper := exec.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	owner, err := network.ProcessOwner(sleeper.Process.Pid)
	_ = sleeper.Process.Kill()
	_ = sleeper.Wait()
	if err != nil {
		t.Fatal(err)
	}
	owner.Table, owner.DataDir, owner.Since = table, filepath.Join(d.dataDir, "..", "gone-"+randHex(3)), time.Now().UTC()
	raw, err := json.Marshal(owner)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(reg.RecordPath(table), raw, 0o644); err != nil {
		t.Fatal(err)
	}

	var rep api.DoctorReport
	d.jsonOut(&rep, "doctor")
	target := "inet+bridge " + table
	i := slices.IndexFunc(rep.Findings, func(f api.Finding) bool { return f.Target == target })
	if i < 0 {
		t.Fatalf("doctor does not report %s: %+v", target, rep.Findings)
	}
	f := rep.Findings[i]
	byHand := "nft delete table inet " + table + "; nft delete table bridge " + table
	if f.Kind != api.FindingOrphanTable || !f.Repairable || !strings.Contains(f.Fix, byHand) ||
		!strings.Contains(f.Detail, fmt.Sprintf("pid %d", owner.PID)) {
		t.Fatalf("finding %+v; want a repairable %s naming pid %d and %q", f, api.FindingOrphanTable, owner.PID, byHand)
	}
	if slices.ContainsFunc(rep.Findings, func(f api.Finding) bool { return strings.HasSuffix(f.Target, " "+d.table) }) {
		t.Fatalf("doctor reports the daemon's own table %s: %+v", d.table, rep.Findings)
	}

	out := d.must("doctor", "--repair")
	if !strings.Contains(out, "deleted orphaned firewall table "+table) {
		t.Fatalf("doctor --repair says:\n%s", out)
	}
	for _, fam := range []string{"inet", "bridge"} {
		if exec.Command("nft", "list", "table", fam, table).Run() == nil {
			t.Errorf("table %s %s is still there after --repair", fam, table)
		}
	}
	if _, err := os.Stat(reg.RecordPath(table)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the orphan's owner record after --repair: %v", err)
	}
	// The daemon's own table is untouched.
	if err := exec.Command("nft", "list", "table", "inet", d.table).Run(); err != nil {
		t.Errorf("the daemon's own table %s: %v", d.table, err)
	}
}
