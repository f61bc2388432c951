package images

import (
	"os"
	"os/exec"
	"testing"
)

// requireTool stops the test when a tool is missing: a skip on a developer
// machine, a failure under CI=true where a missing tool means the CI machine
// is misconfigured and skipping would hide it.
func requireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and prerequisite missing: %s not in PATH (install qemu-utils)", name)
	}
	t.Skipf("prerequisite missing: %s not in PATH (install qemu-utils)", name)
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
