package storage

import (
	"os"
	"os/exec"
	"testing"
)

// missingPrereq skips the test, except under CI=true where a missing tool
// means the CI machine is misconfigured and silently skipping would hide it.
func missingPrereq(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and prerequisite missing: "+format, args...)
	}
	t.Skipf("prerequisite missing: "+format, args...)
}

// requireTool returns the path of an executable or stops the test.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missingPrereq(t, "%s not in PATH (install qemu-utils / xorriso)", name)
	}
	return p
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missingPrereq(t, "test needs root (loop mounts)")
	}
}

// run executes a command and fails the test with its combined output.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}
