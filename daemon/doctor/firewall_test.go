package doctor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/lifecycle"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/vm"
)

// fakeFirewalls is the host's tables as a list; RemoveOrphan runs the
// check as the registry does and records what it removed.
type fakeFirewalls struct {
	tables  []network.FirewallTable
	removed []string
}

func (f *fakeFirewalls) Survey(context.Context) ([]network.FirewallTable, error) {
	return f.tables, nil
}

func (f *fakeFirewalls) RemoveOrphan(ctx context.Context, table string, check func(network.FirewallOwner) error) error {
	for _, t := range f.tables {
		if t.Name != table || t.Owner == nil || t.OwnerAlive {
			continue
		}
		if err := check(*t.Owner); err != nil {
			return err
		}
		f.removed = append(f.removed, table)
		return nil
	}
	return network.ErrNotOrphaned
}

// filesHV runs domains whose disks are at the given paths.
type filesHV struct{ files map[string][]string }

func (h filesHV) OwnedDomains(context.Context) ([]vm.OwnedDomain, error) {
	var out []vm.OwnedDomain
	for name := range h.files {
		out = append(out, vm.OwnedDomain{Name: name})
	}
	return out, nil
}
func (h filesHV) Destroy(context.Context, string) error { return errors.New("not in this test") }
func (h filesHV) DomainFiles(_ context.Context, name string) ([]string, error) {
	return h.files[name], nil
}

// TestFirewallFindings: a table whose owner is gone is repairable only
// when no guest of its data dir runs (or they are this daemon's);
// running owners' tables are not reported; unrecorded labvm tables are
// reported for a human.
func TestFirewallFindings(t *testing.T) {
	owner := func(table, dataDir string) *network.FirewallOwner {
		return &network.FirewallOwner{Table: table, PID: 4242, DataDir: dataDir, Since: time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)}
	}
	both := []string{"inet", "bridge"}
	fw := &fakeFirewalls{tables: []network.FirewallTable{
		{Name: "labvm", Families: both, Owner: owner("labvm", "/var/lib/labvm")}, // this daemon's (even recorded dead)
		{Name: "labvm-gone", Families: both, Owner: owner("labvm-gone", "/srv/gone")},
		{Name: "labvm-guests", Families: []string{"bridge"}, Owner: owner("labvm-guests", "/srv/busy")},
		{Name: "labvm-old", Families: both, Owner: owner("labvm-old", "/var/lib/labvm")}, // our earlier table name
		{Name: "labvm-running", Families: both, Owner: owner("labvm-running", "/srv/other"), OwnerAlive: true},
		{Name: "labvm-manual", Families: []string{"inet"}},
	}}
	hv := filesHV{files: map[string][]string{
		"labvm-web-1":  {"/srv/busy/instances/1/disk.qcow2"},
		"labvm-mine-2": {"/var/lib/labvm/instances/2/disk.qcow2"},
		"labvm-near-3": {"/srv/gone-not/instances/3/disk.qcow2"}, // a prefix of the name, not the dir
	}}
	dr := &Doctor{hv: hv, paths: lifecycle.Paths{DataDir: "/var/lib/labvm"}}
	dr.WatchFirewalls(fw, "labvm")
	found, err := dr.firewallFindings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		kind, target string
		repairable   bool
		fix          string
	}{
		{api.FindingOrphanTable, "inet+bridge labvm-gone", true, "--repair deletes it; by hand: nft delete table inet labvm-gone; nft delete table bridge labvm-gone"},
		{api.FindingOrphanTable, "bridge labvm-guests", false, "its guests still run behind it (labvm-web-1): start that labvmd again (it takes the table back) or stop them, then nft delete table bridge labvm-guests"},
		{api.FindingOrphanTable, "inet+bridge labvm-old", true, "nft delete table inet labvm-old; nft delete table bridge labvm-old"},
		{api.FindingUnknownTable, "inet labvm-manual", false, "nft delete table inet labvm-manual"},
	}
	if len(found) != len(want) {
		for _, f := range found {
			t.Logf("found %s %s: %s", f.Kind, f.Target, f.Fix)
		}
		t.Fatalf("%d findings, want %d", len(found), len(want))
	}
	for i, w := range want {
		f := found[i]
		if f.Kind != w.kind || f.Target != w.target || (f.repair != nil) != w.repairable || !strings.Contains(f.Fix, w.fix) {
			t.Errorf("finding %d: %s %s repairable=%v fix %q; want %s %s repairable=%v fix with %q", i, f.Kind, f.Target, f.repair != nil, f.Fix, w.kind, w.target, w.repairable, w.fix)
		}
	}
	if !strings.Contains(found[0].Detail, "pid 4242 (data dir /srv/gone)") {
		t.Errorf("detail %q does not name the owner", found[0].Detail)
	}
	for _, f := range found {
		if f.repair == nil {
			continue
		}
		if _, err := f.repair(context.Background()); err != nil {
			t.Fatalf("repair %s: %v", f.Target, err)
		}
	}
	if strings.Join(fw.removed, ",") != "labvm-gone,labvm-old" {
		t.Fatalf("removed %v", fw.removed)
	}

	// A guest that started under the gone owner's data dir between the
	// look and the repair stops it.
	fw.removed = nil
	found, err = dr.firewallFindings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hv.files["labvm-late-4"] = []string{"/srv/gone/instances/4/disk.qcow2"}
	if _, err := found[0].repair(context.Background()); err == nil || len(fw.removed) != 0 {
		t.Fatalf("repair with a guest running: %v, removed %v", err, fw.removed)
	}

	// A hypervisor that cannot name a domain's files proves nothing.
	dr.hv = noFiles{}
	found, err = dr.firewallFindings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		if f.repair != nil && f.Target != "inet+bridge labvm-old" {
			t.Errorf("%s repairable without knowing whose guests run", f.Target)
		}
	}
}

type noFiles struct{}

func (noFiles) OwnedDomains(context.Context) ([]vm.OwnedDomain, error) { return nil, nil }
func (noFiles) Destroy(context.Context, string) error                  { return nil }
