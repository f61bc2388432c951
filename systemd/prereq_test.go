package systemd

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
func requireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missingPrereq(t, "%s not in PATH (apt-get install %s)", name, pkg)
	}
	return p
}
