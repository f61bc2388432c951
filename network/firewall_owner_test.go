package network

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// deadOwner is a record of a process that ran and is gone: its pid and
// start time were real.
func deadOwner(t *testing.T, table string) FirewallOwner {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o, err := ProcessOwner(cmd.Process.Pid)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err != nil {
		t.Fatal(err)
	}
	o.Table, o.DataDir = table, "/var/lib/labvm-gone"
	return o
}

// zombieOwner is a record of a process that was killed and not yet
// waited for: its pid and start time are still in /proc, state Z, as a
// labvmd killed a moment ago is until its parent reaps it.
func zombieOwner(t *testing.T, table string) FirewallOwner {
	t.Helper()
	o, cmd := sleeper(t, table, "/var/lib/labvm-killed")
	_ = cmd.Process.Kill()
	stat := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		raw, err := os.ReadFile(stat)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.LastIndexByte(raw, ')'); i > 0 && strings.HasPrefix(string(raw[i+1:]), " Z") {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d never became a zombie: %s", cmd.Process.Pid, raw)
		}
	}
}

// liveOwner is a record of a process that runs until the test ends.
func liveOwner(t *testing.T, table string) FirewallOwner {
	t.Helper()
	o, _ := sleeper(t, table, "/var/lib/labvm-other")
	return o
}

// sleeper starts a process that runs until the test ends (killed and
// reaped then) and returns its record as table's owner.
func sleeper(t *testing.T, table, dataDir string) (FirewallOwner, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	o, err := ProcessOwner(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	o.Table, o.DataDir = table, dataDir
	return o, cmd
}

func writeOwner(t *testing.T, r FirewallRegistry, o FirewallOwner) {
	t.Helper()
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.RecordPath(o.Table), raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFirewallOwnerAlive(t *testing.T) {
	me, err := ProcessOwner(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	reused := me
	reused.Start++ // the same pid, started at another time: someone else
	otherBoot := me
	otherBoot.BootID = "00000000-0000-0000-0000-000000000000"
	for _, tc := range []struct {
		name  string
		o     FirewallOwner
		alive bool
	}{
		{"this process", me, true},
		{"live other process", liveOwner(t, "t"), true},
		{"exited process", deadOwner(t, "t"), false},
		{"killed, not yet reaped (zombie)", zombieOwner(t, "t"), false},
		{"pid reused", reused, false},
		{"an earlier boot", otherBoot, false},
	} {
		if got := tc.o.Alive(); got != tc.alive {
			t.Errorf("%s: alive %v, want %v", tc.name, got, tc.alive)
		}
	}
}

func TestFirewallRegistryRegister(t *testing.T) {
	r := FirewallRegistry{Dir: filepath.Join(t.TempDir(), "owners")}
	if err := r.Register("labvm-a", "/var/lib/a"); err != nil {
		t.Fatal(err)
	}
	got, err := r.read("labvm-a")
	if err != nil || got.PID != os.Getpid() || got.DataDir != "/var/lib/a" || !got.Alive() {
		t.Fatalf("record %+v, %v", got, err)
	}
	// Registering again (a sync, a restart of the same process) is fine.
	if err := r.Register("labvm-a", "/var/lib/a"); err != nil {
		t.Fatal(err)
	}
	// A dead owner's record is taken over.
	writeOwner(t, r, deadOwner(t, "labvm-b"))
	if err := r.Register("labvm-b", "/var/lib/b"); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.read("labvm-b"); got.PID != os.Getpid() {
		t.Fatalf("dead owner's record not replaced: %+v", got)
	}
	// So is a killed one's its parent has not reaped yet.
	writeOwner(t, r, zombieOwner(t, "labvm-z"))
	if err := r.Register("labvm-z", "/var/lib/z"); err != nil {
		t.Fatalf("register over a zombie's record: %v", err)
	}
	// A live other daemon's is not, and the record stays its.
	other := liveOwner(t, "labvm-c")
	writeOwner(t, r, other)
	if err := r.Register("labvm-c", "/var/lib/c"); !errors.Is(err, ErrTableOwned) {
		t.Fatalf("register over a live owner: %v", err)
	}
	if got, _ := r.read("labvm-c"); got.PID != other.PID {
		t.Fatalf("live owner's record replaced: %+v", got)
	}
	// Bad names change nothing.
	if err := r.Register("lab vm", "/x"); !errors.Is(err, ErrInvalidFirewallSpec) {
		t.Fatalf("bad name: %v", err)
	}
	if err := r.RemoveOrphan(context.Background(), "../x", nil); !errors.Is(err, ErrInvalidFirewallSpec) {
		t.Fatalf("bad name: %v", err)
	}
	if err := r.Forget("labvm-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.read("labvm-a"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("record after Forget: %v", err)
	}
}

// TestRemoveOrphanRefuses: without a record, with a live owner, or when
// the caller's check fails, nothing is removed (and nft is not reached).
func TestRemoveOrphanRefuses(t *testing.T) {
	r := FirewallRegistry{Dir: t.TempDir()}
	writeOwner(t, r, liveOwner(t, "labvm-live"))
	writeOwner(t, r, deadOwner(t, "labvm-guests"))
	busy := errors.New("its guests still run")
	for _, tc := range []struct {
		table string
		check func(FirewallOwner) error
	}{
		{"labvm-none", nil},
		{"labvm-live", nil},
		{"labvm-guests", func(FirewallOwner) error { return busy }},
	} {
		if err := r.RemoveOrphan(context.Background(), tc.table, tc.check); !errors.Is(err, ErrNotOrphaned) {
			t.Errorf("%s: %v, want ErrNotOrphaned", tc.table, err)
		}
	}
	if _, err := r.read("labvm-guests"); err != nil {
		t.Fatalf("a refused removal dropped the record: %v", err)
	}
}

// TestFirewallOrphanLab (root): in a throwaway namespace, a table in both
// families whose recorded owner is gone is surveyed as orphaned, with the
// nft commands that delete it, and RemoveOrphan deletes both and the
// record; a live owner's table and a labvm-named table without a record
// are surveyed and kept.
func TestFirewallOrphanLab(t *testing.T) {
	l := newFWLab(t)
	l.addVNet("lvb1", netip.MustParsePrefix("10.250.1.0/24"))
	r := FirewallRegistry{Dir: t.TempDir()}
	orphan, live, unknown := "labvm-orph-"+l.id, "labvm-live-"+l.id, "labvm-unkn-"+l.id
	vnet := FirewallVNet{Name: "lab", Bridge: "lvb1", Subnet: netip.MustParsePrefix("10.250.1.0/24")}
	for _, table := range []string{orphan, live, unknown} {
		l.apply(FirewallSpec{TableName: table, LockPorts: true, VNets: []FirewallVNet{vnet}})
		t.Cleanup(func() { l.remove(table) })
	}
	writeOwner(t, r, deadOwner(t, orphan))
	writeOwner(t, r, liveOwner(t, live))

	survey := func() map[string]FirewallTable {
		t.Helper()
		var list []FirewallTable
		if err := inNetns(l.host, func() error {
			var err error
			list, err = r.Survey(context.Background())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		out := map[string]FirewallTable{}
		for _, ft := range list {
			out[ft.Name] = ft
		}
		return out
	}
	got := survey()
	if ft := got[orphan]; ft.Owner == nil || ft.OwnerAlive ||
		ft.DeleteCommands() != "nft delete table inet "+orphan+"; nft delete table bridge "+orphan {
		t.Fatalf("orphan surveyed as %+v (%q)", ft, ft.DeleteCommands())
	}
	if ft := got[live]; ft.Owner == nil || !ft.OwnerAlive {
		t.Fatalf("live owner's table surveyed as %+v", ft)
	}
	if ft, ok := got[unknown]; !ok || ft.Owner != nil {
		t.Fatalf("unrecorded table surveyed as %+v (listed: %v)", ft, ok)
	}

	remove := func(table string) error {
		return inNetns(l.host, func() error { return r.RemoveOrphan(context.Background(), table, nil) })
	}
	if err := remove(live); !errors.Is(err, ErrNotOrphaned) {
		t.Fatalf("remove a live owner's table: %v", err)
	}
	if err := remove(unknown); !errors.Is(err, ErrNotOrphaned) {
		t.Fatalf("remove an unrecorded table: %v", err)
	}
	if err := remove(orphan); err != nil {
		t.Fatal(err)
	}
	got = survey()
	if _, ok := got[orphan]; ok {
		t.Fatalf("the orphan is still there: %+v", got[orphan])
	}
	if _, ok := got[live]; !ok {
		t.Fatal("the live owner's table went")
	}
	if _, ok := got[unknown]; !ok {
		t.Fatal("the unrecorded table went")
	}
	if _, err := r.read(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the orphan's record after removal: %v", err)
	}
	out := l.inHost("nft", "list", "tables")
	if strings.Contains(out, orphan) {
		t.Fatalf("nft still lists %s:\n%s", orphan, out)
	}
}
