package storage

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRestrictInstanceDirs(t *testing.T) {
	tests := []struct {
		name     string
		mode     os.FileMode
		dir      bool
		wantMode os.FileMode
	}{
		{name: "disk.qcow2", mode: 0o644, wantMode: 0o600},
		{name: "seed.iso", mode: 0o666, wantMode: 0o600},
		{name: "console.log", mode: 0o600, wantMode: 0o600},
		{name: "odd", mode: 0o751, wantMode: 0o700},
		{name: "sub", dir: true, mode: 0o755, wantMode: 0o755}, // only one level down
	}
	root := t.TempDir()
	instances := filepath.Join(root, "instances")
	idir := filepath.Join(instances, "0123456789abcdef")
	if err := os.MkdirAll(idir, 0o755); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(root, "outside")
	if err := os.WriteFile(outside, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A symlink must not lead the chmod elsewhere.
	if err := os.Symlink(outside, filepath.Join(idir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		p := filepath.Join(idir, tt.name)
		var err error
		if tt.dir {
			err = os.Mkdir(p, tt.mode)
		} else {
			err = os.WriteFile(p, nil, tt.mode)
		}
		if err == nil {
			err = os.Chmod(p, tt.mode)
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	if err := RestrictInstanceDirs(instances); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := os.Stat(filepath.Join(idir, tt.name))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != tt.wantMode {
				t.Errorf("mode %v, want %v", st.Mode().Perm(), tt.wantMode)
			}
		})
	}
	if st, _ := os.Stat(idir); st.Mode().Perm() != PrivateDirMode {
		t.Errorf("instance dir mode %v, want %v", st.Mode().Perm(), PrivateDirMode)
	}
	if st, _ := os.Stat(outside); st.Mode().Perm() != 0o644 {
		t.Errorf("symlink target changed to %v", st.Mode().Perm())
	}
	if err := RestrictInstanceDirs(filepath.Join(root, "absent")); err != nil {
		t.Errorf("absent dir: %v", err)
	}
}

func TestEnsurePrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "data")
	for _, start := range []os.FileMode{0, 0o755} { // new, then an old open one
		if start != 0 {
			if err := os.Chmod(dir, start); err != nil {
				t.Fatal(err)
			}
		}
		if err := EnsurePrivateDir(dir); err != nil {
			t.Fatal(err)
		}
		if st, _ := os.Stat(dir); st.Mode().Perm() != PrivateDirMode {
			t.Errorf("from %v: mode %v, want %v", start, st.Mode().Perm(), PrivateDirMode)
		}
	}
}
