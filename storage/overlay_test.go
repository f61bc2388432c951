package storage

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/labvm/labvm/test/hostreq"
)

// newBase creates a base image of the given format with a recognisable
// pattern (0xcd) in its second MiB, so reads through an overlay can prove the
// backing chain resolves.
func newBase(t *testing.T, dir, format string, size string) string {
	t.Helper()
	hostreq.RequireTool(t, "qemu-img", "qemu-utils")
	qemuIO := hostreq.RequireTool(t, "qemu-io", "qemu-utils")
	base := filepath.Join(dir, "base."+format)
	run(t, "qemu-img", "create", "-q", "-f", format, base, size)
	run(t, qemuIO, "-f", format, "-c", "write -P 0xcd 1M 1M", base)
	return base
}

// qemuCheck runs `qemu-img check` and fails on any error, leak or corruption.
func qemuCheck(t *testing.T, path string) {
	t.Helper()
	out := run(t, "qemu-img", "check", "-f", "qcow2", "--output=json", path)
	var res struct {
		CheckErrors int `json:"check-errors"`
		Corruptions int `json:"corruptions"`
		Leaks       int `json:"leaks"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("decode qemu-img check output: %v\n%s", err, out)
	}
	if res.CheckErrors != 0 || res.Corruptions != 0 || res.Leaks != 0 {
		t.Fatalf("qemu-img check %s: %s", path, out)
	}
}

func TestCreateOverlayQemuAgrees(t *testing.T) {
	dir := t.TempDir()
	qcowBase := newBase(t, dir, "qcow2", "1G")
	rawBase := newBase(t, dir, "raw", "64M")
	ctx := context.Background()

	tests := []struct {
		name     string
		backing  string
		format   string
		size     int64
		wantSize int64
	}{
		{name: "1GiB", backing: qcowBase, format: "qcow2", size: 1 << 30, wantSize: 1 << 30},
		{name: "120GiB", backing: qcowBase, format: "qcow2", size: DefaultDiskSize, wantSize: DefaultDiskSize},
		{name: "2TiB", backing: qcowBase, format: "qcow2", size: 2 << 40, wantSize: 2 << 40},
		{name: "64TiB", backing: qcowBase, format: "qcow2", size: 64 << 40, wantSize: 64 << 40},
		{name: "not cluster aligned", backing: qcowBase, format: "qcow2", size: 1<<30 + 512, wantSize: 1<<30 + 512},
		{name: "not sector aligned", backing: qcowBase, format: "qcow2", size: 1<<30 + 1000, wantSize: 1<<30 + 1024},
		{name: "smaller than one cluster", backing: rawBase, format: "raw", size: 4096, wantSize: 4096},
		{name: "raw backing", backing: rawBase, format: "raw", size: 10 << 30, wantSize: 10 << 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk.qcow2")
			err := CreateOverlay(ctx, OverlayOptions{Path: path, BackingFile: tc.backing, BackingFormat: tc.format, Size: tc.size})
			if err != nil {
				t.Fatal(err)
			}
			qemuCheck(t, path)
			info, err := Inspect(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			want := DiskInfo{Format: "qcow2", VirtualSize: tc.wantSize, ActualSize: info.ActualSize, BackingFile: tc.backing, BackingFormat: tc.format}
			if info != want {
				t.Fatalf("Inspect = %+v, want %+v", info, want)
			}
		})
	}
}

// TestCreateOverlayWritable proves the format through QEMU's own block layer:
// data written into the overlay reads back, backing data shows through
// unwritten areas, and the image stays consistent afterwards.
func TestCreateOverlayWritable(t *testing.T) {
	dir := t.TempDir()
	base := newBase(t, dir, "qcow2", "1G")
	path := filepath.Join(dir, "disk.qcow2")
	ctx := context.Background()
	if err := CreateOverlay(ctx, OverlayOptions{Path: path, BackingFile: base, BackingFormat: "qcow2", Size: DefaultDiskSize}); err != nil {
		t.Fatal(err)
	}

	// Unwritten overlay: identical to its base over the base's extent.
	run(t, "qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", base, path)

	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", path)
	// Beyond the 1 GiB base: needs a fresh L2 table far into the L1.
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 100G 64k", path)
	qemuCheck(t, path)

	reads := []string{
		"read -P 0xab 0 1M",     // our write
		"read -P 0xcd 1M 1M",    // backing data shows through
		"read -P 0 2M 1M",       // neither written: zeros
		"read -P 0x5a 100G 64k", // high write
		"read -P 0 119G 1M",     // unbacked tail reads zero
	}
	for _, r := range reads {
		out := run(t, "qemu-io", "-f", "qcow2", "-c", r, path)
		if strings.Contains(out, "Pattern verification failed") {
			t.Fatalf("qemu-io %q: %s", r, out)
		}
	}
	if err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", base, path).Run(); err == nil {
		t.Fatal("qemu-img compare: overlay with new data still equals its base")
	}
}

func TestCreateOverlayIsThin(t *testing.T) {
	dir := t.TempDir()
	base := newBase(t, dir, "qcow2", "1G")
	path := filepath.Join(dir, "disk.qcow2")
	if err := CreateOverlay(context.Background(), OverlayOptions{Path: path, BackingFile: base, BackingFormat: "qcow2", Size: DefaultDiskSize}); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used >= 256<<10 {
		t.Fatalf("fresh 120 GiB overlay uses %d bytes of host disk, want well under 1 MiB", used)
	}
}

func TestCreateOverlayRefuses(t *testing.T) {
	dir := t.TempDir()
	backing := filepath.Join(dir, "base.qcow2")
	if err := os.WriteFile(backing, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	existing := filepath.Join(dir, "existing.qcow2")
	if err := os.WriteFile(existing, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name    string
		ctx     context.Context
		opts    OverlayOptions
		wantIs  error
		wantMsg string
	}{
		{name: "exists", opts: OverlayOptions{Path: existing, BackingFile: backing, BackingFormat: "qcow2", Size: 1 << 30}, wantIs: fs.ErrExist},
		{name: "relative backing", opts: OverlayOptions{BackingFile: "base.qcow2", BackingFormat: "qcow2", Size: 1 << 30}, wantMsg: "absolute"},
		{name: "missing backing", opts: OverlayOptions{BackingFile: filepath.Join(dir, "nope"), BackingFormat: "qcow2", Size: 1 << 30}, wantIs: fs.ErrNotExist},
		{name: "bad format", opts: OverlayOptions{BackingFile: backing, BackingFormat: "vmdk", Size: 1 << 30}, wantMsg: "want qcow2 or raw"},
		{name: "zero size", opts: OverlayOptions{BackingFile: backing, BackingFormat: "qcow2"}, wantMsg: "must be positive"},
		{name: "huge size", opts: OverlayOptions{BackingFile: backing, BackingFormat: "raw", Size: 1 << 62}, wantMsg: "larger than qcow2"},
		{name: "cancelled", ctx: cancelled, opts: OverlayOptions{BackingFile: backing, BackingFormat: "qcow2", Size: 1 << 30}, wantIs: context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			if tc.opts.Path == "" {
				tc.opts.Path = filepath.Join(dir, "new.qcow2")
			}
			err := CreateOverlay(ctx, tc.opts)
			if err == nil {
				t.Fatal("CreateOverlay succeeded, want error")
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Fatalf("error %v does not wrap %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %q does not mention %q", err, tc.wantMsg)
			}
			if _, err := os.Stat(filepath.Join(dir, "new.qcow2")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("failed CreateOverlay left a file behind: %v", err)
			}
		})
	}
	if b, _ := os.ReadFile(existing); string(b) != "keep me" {
		t.Fatalf("existing file was modified: %q", b)
	}
}

func BenchmarkCreateOverlay(b *testing.B) {
	dir := b.TempDir()
	backing := filepath.Join(dir, "base.qcow2")
	if err := os.WriteFile(backing, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		path := filepath.Join(dir, "disk.qcow2")
		if err := CreateOverlay(ctx, OverlayOptions{Path: path, BackingFile: backing, BackingFormat: "qcow2", Size: DefaultDiskSize}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = os.Remove(path)
		b.StartTimer()
	}
}
