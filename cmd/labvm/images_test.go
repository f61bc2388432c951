package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestOpenImage(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(regular, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.img")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		path     string
		wantSize int64
		wantErr  string
	}{
		{name: "regular file", path: regular, wantSize: 4096},
		{name: "directory", path: dir, wantErr: "not a regular file"},
		{name: "fifo, without hanging", path: fifo, wantErr: "not a regular file"},
		{name: "empty", path: empty, wantErr: "empty"},
		{name: "missing", path: filepath.Join(dir, "nope"), wantErr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, size, err := openImage(tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			if size != tt.wantSize {
				t.Fatalf("size %d, want %d", size, tt.wantSize)
			}
		})
	}
}
