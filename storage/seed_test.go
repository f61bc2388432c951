package storage

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/labvm/labvm/test/hostreq"
)

// wantSeedFiles is what the guest must find on the seed, byte for byte.
func wantSeedFiles(t *testing.T, spec SeedSpec) map[string][]byte {
	t.Helper()
	ud, err := UserData(spec)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{"meta-data": MetaData(spec), "user-data": ud, "network-config": NetworkConfig(spec)}
}

func writeTestSeed(t *testing.T, spec SeedSpec) (string, map[string][]byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "seed.iso")
	if err := WriteSeed(context.Background(), path, spec); err != nil {
		t.Fatal(err)
	}
	return path, wantSeedFiles(t, spec)
}

// compareTree checks that dir holds exactly the wanted files with equal bytes.
func compareTree(t *testing.T, dir string, want map[string][]byte) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if wantNames := slices.Sorted(maps.Keys(want)); !slices.Equal(names, wantNames) {
		t.Fatalf("seed holds %q, want exactly %q", names, wantNames)
	}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s reads back as:\n%s\nwant:\n%s", name, got, data)
		}
	}
}

func TestWriteSeedFile(t *testing.T) {
	path, _ := writeTestSeed(t, testSpec())
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("seed mode %v, want 0600 (it carries keys and scripts)", st.Mode().Perm())
	}
	if st.Size()%2048 != 0 {
		t.Fatalf("seed size %d is not whole 2048-byte sectors", st.Size())
	}
	// Rewriting replaces the seed in place and leaves no temp file.
	spec := testSpec()
	spec.Hostname = "renamed"
	if err := WriteSeed(context.Background(), path, spec); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries after rewrite, want only the seed", len(entries))
	}
	img, _ := os.ReadFile(path)
	if !bytes.Contains(img, []byte(`local-hostname: "renamed"`)) {
		t.Fatal("rewritten seed does not carry the new hostname")
	}
}

func TestWriteSeedFailureLeavesNothing(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	bad := testSpec()
	bad.Hostname = "not a label"

	tests := []struct {
		name   string
		ctx    context.Context
		spec   SeedSpec
		wantIs error
	}{
		{name: "invalid spec", ctx: context.Background(), spec: bad, wantIs: ErrInvalidSeed},
		{name: "cancelled", ctx: cancelled, spec: testSpec(), wantIs: context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			err := WriteSeed(tc.ctx, filepath.Join(dir, "seed.iso"), tc.spec)
			if !errors.Is(err, tc.wantIs) {
				t.Fatalf("WriteSeed error = %v, want %v", err, tc.wantIs)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("failed WriteSeed left %v behind", entries)
			}
		})
	}
	t.Run("missing directory", func(t *testing.T) {
		err := WriteSeed(context.Background(), filepath.Join(t.TempDir(), "nope", "seed.iso"), testSpec())
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("WriteSeed error = %v, want ErrNotExist", err)
		}
	})
}

// TestWriteSeedReaders reads the seed with independent ISO9660
// implementations; each must see the cidata label, the Joliet names and the
// exact contents.
func TestWriteSeedReaders(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec SeedSpec
	}{
		{name: "one key", spec: testSpec()},
		{name: "user-data spanning sectors", spec: bigSpec()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, want := writeTestSeed(t, tc.spec)
			checkSeedReaders(t, path, want)
		})
	}
}

// bigSpec yields a user-data file several ISO sectors long.
func bigSpec() SeedSpec {
	s := testSpec()
	for len(s.SSHAuthorizedKeys) < 40 {
		s.SSHAuthorizedKeys = append(s.SSHAuthorizedKeys, testKey)
	}
	return s
}

func checkSeedReaders(t *testing.T, path string, want map[string][]byte) {

	t.Run("blkid", func(t *testing.T) {
		hostreq.RequireTool(t, "blkid", "util-linux")
		out := run(t, "blkid", "-p", "-o", "export", path)
		for _, line := range []string{"LABEL=cidata", "TYPE=iso9660", `VERSION=Joliet\ Extension`} {
			if !slices.Contains(strings.Split(out, "\n"), line) {
				t.Fatalf("blkid output lacks %q:\n%s", line, out)
			}
		}
	})
	t.Run("xorriso", func(t *testing.T) {
		hostreq.RequireTool(t, "xorriso", "xorriso")
		out := run(t, "xorriso", "-indev", path, "-pvd_info")
		if !strings.Contains(out, "Volume Id    : cidata\n") {
			t.Fatalf("xorriso -pvd_info:\n%s", out)
		}
		dest := filepath.Join(t.TempDir(), "x")
		run(t, "xorriso", "-osirrox", "on", "-indev", path, "-extract", "/", dest)
		// xorriso copies the ISO's read-only directory mode; restore write
		// access so t.TempDir can clean up when not running as root.
		t.Cleanup(func() { _ = os.Chmod(dest, 0o755) })
		compareTree(t, dest, want)
	})
	t.Run("isoinfo", func(t *testing.T) {
		hostreq.RequireTool(t, "isoinfo", "genisoimage")
		out := run(t, "isoinfo", "-d", "-i", path)
		for _, line := range []string{"Volume id: cidata", "Joliet with UCS level 3 found"} {
			if !strings.Contains(out, line+"\n") {
				t.Fatalf("isoinfo -d lacks %q:\n%s", line, out)
			}
		}
		out = run(t, "isoinfo", "-J", "-f", "-i", path)
		if out != "/meta-data\n/network-config\n/user-data\n" {
			t.Fatalf("isoinfo -J -f lists:\n%s", out)
		}
	})
}

// TestWriteSeedMount mounts the seed as a guest would. The kernel's isofs is
// the reader cloud-init relies on; where the host kernel lacks it (as in
// some microVM sandboxes) fuseiso stands in.
func TestWriteSeedMount(t *testing.T) {
	hostreq.Require(t, os.Geteuid() == 0, "the test needs root (loop mounts)")
	path, want := writeTestSeed(t, bigSpec())
	mnt := t.TempDir()

	if kernelHasISO9660() {
		run(t, "mount", "-t", "iso9660", "-o", "loop,ro", path, mnt)
		t.Cleanup(func() {
			if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v\n%s", mnt, err, out)
			}
		})
	} else {
		fuseiso := hostreq.RequireTool(t, "fuseiso", "fuseiso") // the kernel has no iso9660
		run(t, fuseiso, path, mnt)
		t.Cleanup(func() {
			if out, err := exec.Command("fusermount", "-u", mnt).CombinedOutput(); err != nil {
				t.Errorf("fusermount -u %s: %v\n%s", mnt, err, out)
			}
		})
	}
	compareTree(t, mnt, want)
}

func kernelHasISO9660() bool {
	// modprobe may fail when isofs is built in or modules are absent; the
	// filesystem list below is the real answer either way.
	_ = exec.Command("modprobe", "isofs").Run()
	fss, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(fss), "\n") {
		if strings.TrimSpace(line) == "iso9660" {
			return true
		}
	}
	return false
}
