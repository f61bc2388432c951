package e2e

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/api"
)

// nobody is a plain local user with no group in common with anything of
// labvm's: the hostile neighbour on a shared lab host.
var nobody = []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}

// asNobody runs argv as nobody and returns its exit status and stderr.
func asNobody(t *testing.T, argv ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(nobody[0], append(nobody[1:len(nobody):len(nobody)], argv...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("run %v as nobody: %v", argv, err)
	}
	return 0, string(out)
}

// TestInstanceFilesArePrivate: another local user can neither read an
// instance's disk, seed, manifest, console or script log, nor list any
// labvm directory, while the instance runs, after it stops, and after
// labvmd fixes a data dir an older version left open; QEMU still opens
// everything it needs across stop and start.
func TestInstanceFilesArePrivate(t *testing.T) {
	image := requireHost(t)
	d := startDaemon(t)
	d.must("image", "import", "tiny", image)
	setup := filepath.Join(t.TempDir(), "setup.sh")
	if err := os.WriteFile(setup, []byte("#!/bin/sh\necho the-secret-is-42\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	name := "priv-" + randHex(3)
	d.must("create", name, "--image", "tiny", "--size", "Standard_B1s", "--setup-script", setup)
	inst := d.showInstance(name)
	idir := filepath.Join(d.dataDir, "instances", inst.ID)
	files := []string{"disk.qcow2", "seed.iso", "manifest.json", "console.log", "setup.log"}
	dirs := []string{d.dataDir, filepath.Join(d.dataDir, "instances"), idir, filepath.Join(d.dataDir, "images")}

	check := func(t *testing.T, when string) {
		t.Helper()
		for _, f := range files {
			p := filepath.Join(idir, f)
			st, err := os.Stat(p)
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			if st.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s: %s has mode %v; want no group or other bits", when, f, st.Mode().Perm())
			}
			if code, out := asNobody(t, "head", "-c", "1", p); code == 0 || !strings.Contains(out, "Permission denied") {
				t.Errorf("%s: nobody reading %s: exit %d, %q; want EACCES", when, f, code, out)
			}
		}
		for _, dir := range dirs {
			if code, out := asNobody(t, "ls", dir); code == 0 || !strings.Contains(out, "Permission denied") {
				t.Errorf("%s: nobody listing %s: exit %d, %q; want EACCES", when, dir, code, out)
			}
		}
	}

	d.chapter(t, "running: nothing of the instance is readable or listable by another user", func(t *testing.T) {
		check(t, "running")
	})

	d.chapter(t, "stopped: libvirt gave the disk back to root, and it stays private", func(t *testing.T) {
		d.must("stop", name)
		check(t, "stopped")
	})

	d.chapter(t, "a data dir an older labvm left open is closed at the next start", func(t *testing.T) {
		d.stop()
		for _, dir := range dirs {
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range files {
			if err := os.Chmod(filepath.Join(idir, f), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		d.start()
		check(t, "after labvmd restarted on an open data dir")
	})

	d.chapter(t, "QEMU still opens disk, seed and console: the instance starts and runs", func(t *testing.T) {
		d.must("start", name)
		if st := d.showInstance(name).State; st != api.StateRunning {
			t.Fatalf("after start: %s", st)
		}
		check(t, "running again")
	})

	d.chapter(t, "the base image stays read-only and shared", func(t *testing.T) {
		bases, _ := filepath.Glob(filepath.Join(d.dataDir, "images", "*.qcow2"))
		if len(bases) != 1 {
			t.Fatalf("bases: %v", bases)
		}
		st, err := os.Stat(bases[0])
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o222 != 0 || st.Mode().Type() != fs.FileMode(0) {
			t.Errorf("base mode %v; want read-only regular file", st.Mode())
		}
		d.must("delete", name, "--yes")
	})

}
