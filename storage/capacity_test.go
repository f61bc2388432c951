package storage

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckVirtualSize(t *testing.T) {
	fs80 := Capacity{Size: 252 << 30, Free: 80 << 30}
	tests := []struct {
		name    string
		size    int64
		c       Capacity
		wantErr bool
	}{
		{name: "default 120G on 252G with 80G free", size: 120 << 30, c: fs80},
		{name: "exactly the filesystem", size: 252 << 30, c: fs80},
		{name: "2P", size: 2 << 50, c: fs80, wantErr: true},
		{name: "one byte over", size: 252<<30 + 1, c: fs80, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkVirtualSize(tt.size, tt.c, "/var/lib/labvm")
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && (!errors.Is(err, ErrDiskTooLarge) || !strings.Contains(err.Error(), "at most 252G")) {
				t.Fatalf("err = %v; want ErrDiskTooLarge naming the limit", err)
			}
		})
	}
}

func TestCheckVirtualSizeHere(t *testing.T) {
	dir := t.TempDir()
	c, err := FilesystemCapacity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Size <= 0 || c.Free < 0 || c.Free > c.Size {
		t.Fatalf("capacity %+v", c)
	}
	if err := CheckVirtualSize(dir, c.Size); err != nil {
		t.Fatalf("the filesystem's own size: %v", err)
	}
	if err := CheckVirtualSize(dir, 2<<50); !errors.Is(err, ErrDiskTooLarge) {
		t.Fatalf("2P: %v", err)
	}
}
