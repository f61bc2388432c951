package daemon

import (
	"context"
	"os"
	"testing"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/vm"
)

func TestParseMemAvailable(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"MemTotal:       24576000 kB\nMemFree: 1000 kB\nMemAvailable:   20000000 kB\n", 20000000 << 10, true},
		{"MemTotal: 1 kB\n", 0, false},
		{"MemAvailable: lots kB\n", 0, false},
	}
	for _, tt := range tests {
		got, err := parseMemAvailable([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseMemAvailable(%q) = %d, %v", tt.in, got, err)
		}
	}
}

// TestHostGuards: a create or start the host cannot carry is refused with
// a clear error, and nothing is made.
func TestHostGuards(t *testing.T) {
	td := newTestDaemon(t, newFakeHypervisor(), nil)
	ctx := context.Background()

	if err := td.checkHost(vm.Size{Name: "Huge", MemoryMiB: 1 << 40}); !api.IsCode(err, api.CodeInsufficientResources) {
		t.Fatalf("a size bigger than the host's memory: %v", err)
	}
	if _, err := td.create(t, tinyReq("fits-dev")); err != nil {
		t.Fatal(err)
	}
	op, err := td.client.Stop(ctx, "fits-dev")
	if err == nil {
		_, err = td.client.Wait(ctx, op.ID, nil)
	}
	if err != nil {
		t.Fatal(err)
	}

	td.cfg.MinFreeDisk = 1 << 62 // more than any disk has
	if _, err := td.client.CreateInstance(ctx, tinyReq("full-dev")); !api.IsCode(err, api.CodeInsufficientResources) {
		t.Fatalf("create with the disk full: %v", err)
	}
	if _, err := td.client.Start(ctx, "fits-dev"); !api.IsCode(err, api.CodeInsufficientResources) {
		t.Fatalf("start with the disk full: %v", err)
	}
	if _, err := td.client.Instance(ctx, "full-dev"); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("refused create left a record: %v", err)
	}
	entries, _ := os.ReadDir(td.cfg.instancesDir())
	if len(entries) != 1 {
		t.Fatalf("instance dirs after a refused create: %d, want 1", len(entries))
	}
	if inst, _ := td.client.Instance(ctx, "fits-dev"); inst.State != "Stopped" {
		t.Fatalf("refused start changed the state to %s", inst.State)
	}
}
