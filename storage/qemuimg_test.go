package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labvm/labvm/test/hostreq"
)

func TestInspect(t *testing.T) {
	hostreq.RequireTool(t, "qemu-img", "qemu-utils")
	dir := t.TempDir()
	qcow := filepath.Join(dir, "a.qcow2")
	raw := filepath.Join(dir, "a.raw")
	overlay := filepath.Join(dir, "o.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", qcow, "1G")
	run(t, "qemu-img", "create", "-q", "-f", "raw", raw, "3M")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", qcow, "-F", "qcow2", overlay, "2G")

	tests := []struct {
		name string
		path string
		want DiskInfo
	}{
		{name: "qcow2", path: qcow, want: DiskInfo{Format: "qcow2", VirtualSize: 1 << 30}},
		{name: "raw", path: raw, want: DiskInfo{Format: "raw", VirtualSize: 3 << 20}},
		{name: "overlay", path: overlay, want: DiskInfo{Format: "qcow2", VirtualSize: 2 << 30, BackingFile: qcow, BackingFormat: "qcow2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Inspect(context.Background(), tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if got.ActualSize <= 0 && tc.want.Format == "qcow2" {
				t.Errorf("ActualSize = %d, want > 0", got.ActualSize)
			}
			got.ActualSize = 0
			if got != tc.want {
				t.Fatalf("Inspect = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestInspectErrors(t *testing.T) {
	hostreq.RequireTool(t, "qemu-img", "qemu-utils")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	missing := filepath.Join(t.TempDir(), "missing.qcow2")

	tests := []struct {
		name    string
		ctx     context.Context
		wantMsg string
		wantIs  error
	}{
		// qemu-img's stderr must reach the caller: it is the only
		// explanation of what went wrong.
		{name: "missing file", ctx: context.Background(), wantMsg: "No such file or directory"},
		{name: "cancelled", ctx: cancelled, wantIs: context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Inspect(tc.ctx, missing)
			if err == nil || !strings.Contains(err.Error(), tc.wantMsg) || !strings.Contains(err.Error(), missing) {
				t.Fatalf("Inspect error = %v, want mention of %q and the path", err, tc.wantMsg)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Fatalf("Inspect error = %v, want %v", err, tc.wantIs)
			}
		})
	}
}

func TestConvert(t *testing.T) {
	hostreq.RequireTool(t, "qemu-img", "qemu-utils")
	dir := t.TempDir()
	raw := filepath.Join(dir, "a.raw")
	if err := os.WriteFile(raw, []byte(strings.Repeat("labvm!!\n", 1<<10)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dest := filepath.Join(dir, "a.qcow2")
	if err := Convert(ctx, ConvertOptions{Source: raw, SourceFormat: "raw", Dest: dest, DestFormat: "qcow2"}); err != nil {
		t.Fatal(err)
	}
	info, err := Inspect(ctx, dest)
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != "qcow2" || info.VirtualSize != 8<<10 {
		t.Fatalf("converted image = %+v, want qcow2 of 8 KiB", info)
	}
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, dest)

	err = Convert(ctx, ConvertOptions{Source: raw, Dest: dest, DestFormat: "qcow2"})
	if err == nil || !strings.Contains(err.Error(), "formats are required") {
		t.Fatalf("Convert without source format: %v", err)
	}
	err = Convert(ctx, ConvertOptions{Source: raw, SourceFormat: "vmdk", Dest: dest, DestFormat: "qcow2"})
	if err == nil || !strings.Contains(err.Error(), "qemu-img convert") {
		t.Fatalf("Convert with wrong source format: %v", err)
	}
}
