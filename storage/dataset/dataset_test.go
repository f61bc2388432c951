package dataset

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labvm/labvm/test/hostreq"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"imagenet", true},
		{"coco-2017", true},
		{"abc", true},
		{"ab", false},                        // too short
		{"ImageNet", false},                  // upper case
		{"1data", false},                     // starts with a digit
		{"data-", false},                     // ends with '-'
		{"../etc", false},                    // path tricks
		{"a/b/c", false},                     // slash
		{"data set", false},                  // space: a shell word
		{"x;rm -rf /", false},                // shell
		{"abcdefghijklmnopqrstuvwxy", false}, // 25 characters
		{"abcdefghijklmnopqrstuvwx", true},   // 24
		{"", false},                          // empty
		{"dataset\n", false},                 // control character
		{"d\u00e9j\u00e0", false},            // not ASCII
		{"datasets/../../../etc/x", false},   // traversal
		{"-rf", false},                       // option-like
	} {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateName(%q) = %v, not ErrInvalid", tc.name, err)
		}
	}
}

func TestCheckSource(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "var", "lib", "labvm")
	ds := filepath.Join(root, "srv", "datasets", "x")
	for _, d := range []string{data, ds} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, "link-to-data")
	if err := os.Symlink(data, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what, path, want string
		ok               bool
	}{
		{"a directory", ds, ds, true},
		{"cleaned", ds + "/./", ds, true},
		{"relative", "srv/datasets/x", "", false},
		{"missing", filepath.Join(root, "nope"), "", false},
		{"a file", file, "", false},
		{"the data dir", data, "", false},
		{"inside the data dir", filepath.Join(data), "", false},
		{"holding the data dir", filepath.Join(root, "var"), "", false},
		{"the root", "/", "", false},
		{"a symlink to the data dir", link, "", false},
	} {
		got, err := CheckSource(tc.path, data)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%s: CheckSource(%q) = %q, %v; want %q ok=%v", tc.what, tc.path, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: error %v is not ErrInvalid", tc.what, err)
		}
	}
}

// TestMountReadOnly makes a real mount and tries, as root, what a guest's
// root would ask virtiofsd for: every write is refused by the host.
func TestMountReadOnly(t *testing.T) {
	hostreq.RequireRoot(t)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "data.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := Mounts{Root: filepath.Join(t.TempDir(), "datasets")}
	const id = "0123456789abcdef"
	t.Cleanup(func() { _ = m.Release(id) })

	path, err := m.Mount(id, "testdata", src)
	if err != nil {
		t.Fatal(err)
	}
	if path != m.Path(id, "testdata") {
		t.Fatalf("mounted at %s, want %s", path, m.Path(id, "testdata"))
	}
	opts, ok, err := MountOptions(path)
	if err != nil || !ok {
		t.Fatalf("no mount at %s (%v)", path, err)
	}
	for _, o := range []string{"ro", "nosuid", "nodev"} {
		if !slices.Contains(opts, o) {
			t.Errorf("mount options %v lack %s", opts, o)
		}
	}
	got, err := os.ReadFile(filepath.Join(path, "data.txt"))
	if err != nil || string(got) != "hello\n" {
		t.Fatalf("read through the mount: %q, %v", got, err)
	}
	for _, tc := range []struct {
		what string
		do   func() error
	}{
		{"create a file", func() error { return os.WriteFile(filepath.Join(path, "new"), []byte("x"), 0o644) }},
		{"append", func() error {
			f, err := os.OpenFile(filepath.Join(path, "data.txt"), os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"mknod", func() error {
			return unix.Mknod(filepath.Join(path, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
		}},
		{"setuid", func() error { return os.Chmod(filepath.Join(path, "data.txt"), 0o4755) }},
		{"remove", func() error { return os.Remove(filepath.Join(path, "data.txt")) }},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(path, "d"), 0o755) }},
	} {
		if err := tc.do(); !errors.Is(err, unix.EROFS) {
			t.Errorf("%s through the mount: %v, want EROFS", tc.what, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(src, "data.txt")); err != nil || fi.Mode()&os.ModeSetuid != 0 {
		t.Errorf("source file changed: %v, %v", fi.Mode(), err)
	}

	// Mounting again replaces the mount rather than stacking another.
	if _, err := m.Mount(id, "testdata", src); err != nil {
		t.Fatal(err)
	}
	ids, err := m.Instances()
	if err != nil || !slices.Equal(ids, []string{id}) {
		t.Fatalf("Instances() = %v, %v", ids, err)
	}
	if err := m.Release(id); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := MountOptions(path); ok {
		t.Errorf("%s still mounted after Release", path)
	}
	if _, err := os.Stat(m.Dir(id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left after Release: %v", m.Dir(id), err)
	}
	if err := m.Release(id); err != nil {
		t.Errorf("second Release: %v", err)
	}

	// A missing source: a clear error and nothing left behind.
	_, err = m.Mount(id, "gone", filepath.Join(src, "missing"))
	if !errors.Is(err, ErrSourceMissing) {
		t.Errorf("missing source: %v, want ErrSourceMissing", err)
	}
	if _, err := os.Stat(m.Path(id, "gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount point left for a missing source: %v", err)
	}
}

// TestMountInAnotherNamespace is labvmd under systemd: its own mount
// namespace differs from libvirtd's, so the mounts must be made, and
// released, in the other one; its own sees none of it.
func TestMountInAnotherNamespace(t *testing.T) {
	hostreq.RequireRoot(t)
	unshare := hostreq.RequireTool(t, "unshare", "util-linux")
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "data.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The "host": a process in a private mount namespace of its own.
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "sleep", "120")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	ns := fmt.Sprintf("/proc/%d/ns/mnt", pid)
	own, _ := os.Readlink("/proc/thread-self/ns/mnt")
	// Wait until unshare has exec'd sleep: only then has it also made its
	// mounts private. Between unshare(2) and that, the new namespace still
	// propagates mounts back to ours (a flake once seen).
	for {
		other, err := os.Readlink(ns)
		if err != nil {
			t.Fatal(err)
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			t.Fatal(err)
		}
		if other != own && strings.TrimSpace(string(comm)) == "sleep" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	m := Mounts{Root: filepath.Join(t.TempDir(), "datasets"), HostNS: ns}
	theirs := func() string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// Several boots in a row, as a host with many instances has: the
	// thread that joined the other namespace for the first must leave
	// this process's view of its own namespace alone, or the next mount
	// would land here (Go wedges its main thread, whose /proc/self is
	// the process's, when a goroutine locked to it exits).
	for _, id := range []string{"00000000000000fd", "00000000000000fe", "00000000000000ff"} {
		t.Cleanup(func() { _ = m.Release(id) })
		path, err := m.Mount(id, "testdata", src)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(theirs(), " "+path+" ro,nosuid,nodev") {
			t.Errorf("no read-only mount at %s in the other namespace:\n%s", path, theirs())
		}
		if _, ok, _ := MountOptions(path); ok {
			t.Errorf("the mount at %s is in labvmd's own namespace too", path)
		}
		if err := m.Release(id); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(theirs(), " "+path+" ") {
			t.Errorf("%s still mounted in the other namespace after Release", path)
		}
		if _, err := os.Stat(m.Dir(id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Release: %v", m.Dir(id), err)
		}
	}
}
