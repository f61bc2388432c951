package doctor_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/daemon/store"
)

// TestDoctorRepairsWhatIsSafe leaves one of each kind of junk and checks
// that doctor reports it, --repair removes exactly the safe ones, and an
// unknown domain whose data dir cannot be proven stays.
func TestDoctorRepairsWhatIsSafe(t *testing.T) {
	hv := daemontest.NewFakeHypervisor()
	hv.AddDomain("labvm-ghost-12345678", "1234567890abcdef") // no record, no DomainFiles: report only
	orphanIP := netip.MustParseAddr("10.177.0.77")
	td := daemontest.New(t, hv, func(tx *store.Tx) error {
		return tx.AllocateIP("default", orphanIP, "feedfacefeedface")
	})
	ctx := context.Background()
	if _, err := td.Create(t, daemontest.TinyReq("keeper")); err != nil {
		t.Fatal(err)
	}
	keeper, err := td.Client.Instance(ctx, "keeper")
	if err != nil {
		t.Fatal(err)
	}
	orphanDir := filepath.Join(td.Paths.Instances(), "0123456789abcdef")
	importTemp := filepath.Join(td.Paths.Images(), ".import-7")
	manifestTemp := filepath.Join(td.Paths.Dir(keeper.ID), ".manifest-9")
	for _, p := range []string{orphanDir, importTemp} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(manifestTemp, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		kind, target string
		repaired     bool
	}{
		{api.FindingOrphanDir, orphanDir, true},
		{api.FindingPartialFile, importTemp, true},
		{api.FindingPartialFile, manifestTemp, true},
		{api.FindingOrphanIP, "default/" + orphanIP.String(), true},
		{api.FindingUnknownDomain, "labvm-ghost-12345678", false},
	}
	rep, err := td.Client.Doctor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if !slices.ContainsFunc(rep.Findings, func(f api.Finding) bool {
			return f.Kind == c.kind && f.Target == c.target && f.Repairable == c.repaired
		}) {
			t.Errorf("doctor does not report %s %s (repairable %v): %+v", c.kind, c.target, c.repaired, rep.Findings)
		}
	}
	rep, err = td.Client.RunDoctor(ctx, api.DoctorRequest{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		left := slices.ContainsFunc(rep.Remaining, func(f api.Finding) bool { return f.Target == c.target })
		if left == c.repaired {
			t.Errorf("%s %s: left after repair = %v, want %v (actions %q)", c.kind, c.target, left, !c.repaired, rep.Actions)
		}
	}
	if !slices.ContainsFunc(rep.Actions, func(a string) bool { return strings.Contains(a, "released address") }) {
		t.Errorf("repair does not say it released the address: %q", rep.Actions)
	}
	if _, err := os.Stat(td.Paths.Disk(keeper.ID)); err != nil {
		t.Errorf("repair touched a live instance's disk: %v", err)
	}
	if _, err := td.Lifecycle().ReadManifest(keeper.ID); err != nil {
		t.Errorf("live instance's manifest: %v", err)
	}
}
