package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/labvm/labvm/storage/dataset"
	"github.com/labvm/labvm/test/hostreq"
)

// debianPython is Debian's interpreter: root's PATH may lead to another
// (pyenv) that the test user cannot run, and the client targets Debian 12.
const debianPython = "/usr/bin/python3"

// TestPythonClient installs the Python client offline into a venv, the way
// a user would, and runs its pytest suite as a contributor against a private
// labvmd: the unit tests (a fake daemon) and test_real_daemon.py (this one).
// The owner (root) declares a dataset first, so the contributor's instance
// is created with it and an idle shutdown from Python and reads the
// dataset in its guest. A run that skips or collects nothing fails: that
// is lost coverage.
func TestPythonClient(t *testing.T) {
	image := requireHost(t)
	hostreq.Require(t, exec.Command(debianPython, "-m", "pytest", "--version").Run() == nil,
		debianPython+" -m pytest does not run (apt-get install python3-pytest, or `make host`)")
	hostreq.Require(t, exec.Command(debianPython, "-c", "import ensurepip, setuptools").Run() == nil,
		"venv or setuptools missing (apt-get install python3-venv python3-setuptools)")

	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// /var/tmp, 0755: the test user runs the venv's python from here.
	dir, err := os.MkdirTemp("/var/tmp", "labvm-py-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	// A copy, so pip's in-tree build leaves nothing in the worktree.
	src := filepath.Join(dir, "src")
	venv := filepath.Join(dir, "venv")
	pyRun(t, "cp", "-r", filepath.Join(repo, "python"), src)
	pyRun(t, debianPython, "-m", "venv", "--system-site-packages", venv)
	pyRun(t, filepath.Join(venv, "bin", "pip"), "install", "--quiet", "--disable-pip-version-check",
		"--no-build-isolation", "--no-index", src)

	p := "lvt" + randHex(3)
	sock := p + "sock"
	testGroup(t, sock)
	alice := testUser(t, p+"-alice", sock)
	bob := testUser(t, p+"-bob", sock)

	d := startDaemon(t, "--socket-group", sock)
	d.must("image", "import", "tiny", image)
	d.must("role", "assign", alice.name, "contributor")

	// A dataset: a host directory with one file the guest reads back.
	dsName := "py-ds-" + randHex(3)
	dsDir := filepath.Join(dir, "dataset")
	if err := os.MkdirAll(dsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dsDir, "hello.txt"), []byte("hello from "+dsName+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mounts := dataset.Mounts{Root: filepath.Join(d.dataDir, "datasets")}
	t.Cleanup(func() {
		// After labvmd and its domains are gone, so nothing mounts again;
		// before the harness removes the data dir. Normally Python's
		// delete released them already.
		d.kill()
		d.destroyOurDomains()
		ids, _ := mounts.Instances()
		for _, id := range ids {
			if err := mounts.Release(id); err != nil {
				t.Errorf("release leftover mounts of %s: %v", id, err)
			}
		}
	})
	d.must("dataset", "add", dsName, dsDir)

	ctx := t.Context()
	cmd := exec.CommandContext(ctx, "setpriv", "--reuid="+strconv.Itoa(alice.uid), "--regid="+strconv.Itoa(alice.gid), "--init-groups",
		filepath.Join(venv, "bin", "python"), "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rA",
		filepath.Join(repo, "test", "python"))
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=/usr/bin:/bin", "HOME=/nonexistent", "PYTHONDONTWRITEBYTECODE=1",
		"LABVM_SOCKET=" + d.socket,
		"LABVM_E2E_IMAGE=tiny", "LABVM_E2E_SIZE=Standard_B1s",
		"LABVM_E2E_INSTANCE=py-" + randHex(3),
		"LABVM_E2E_OTHER_USER=" + bob.name,
		"LABVM_E2E_INSTALLED=" + venv,
		"LABVM_E2E_DATASET=" + dsName,
		"LABVM_E2E_DATASET_PATH=" + dsDir,
	}
	out, err := cmd.CombinedOutput()
	t.Logf("pytest as %s (contributor):\n%s", alice.name, out)
	if err != nil {
		// Exit 5 is "no tests collected": as much a failure as any other.
		t.Fatalf("pytest: %v", err)
	}
	summary := regexp.MustCompile(`(?m)^=+ (.*) in [0-9.]+s(?: \([0-9:]+\))? =+$`).FindSubmatch(out)
	if summary == nil || !strings.Contains(string(summary[1]), " passed") {
		t.Fatalf("no pytest summary with passed tests in the output")
	}
	if s := string(summary[1]); strings.Contains(s, "skipped") || strings.Contains(s, "xfail") || strings.Contains(s, "deselected") {
		t.Fatalf("pytest left tests out: %s", s)
	}
}

// pyRun runs a command as root and fails the test with its output.
func pyRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
