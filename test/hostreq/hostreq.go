// Package hostreq gates tests on what the host provides: root, a tool in
// PATH, a running service. Off CI a missing prerequisite skips the test and
// says why; under CI=true it fails the test, because there a missing
// prerequisite means the CI machine is misconfigured, and a skip would let
// coverage vanish silently.
//
// Every test outside the e2e harness that needs something of the host goes
// through here, so there is one rule and one wording.
package hostreq

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// OnCI reports whether the tests run under CI=true.
func OnCI() bool { return os.Getenv("CI") == "true" }

// Require stops the test unless ok: a skip naming why, or under CI=true a
// failure naming why. why says what is missing and, where it helps, how to
// get it ("qemu-img not in PATH (apt-get install qemu-utils)").
func Require(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if OnCI() {
		t.Fatalf("CI=true and prerequisite missing: %s", why)
	} else {
		t.Skipf("prerequisite missing: %s", why)
	}
}

// RequireRoot stops the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "the test needs root (run it as root, e.g. `sudo make test`)")
}

// RequireTool returns the path of an executable in PATH, or stops the test
// saying which Debian package provides it.
func RequireTool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, err == nil, fmt.Sprintf("%s not in PATH (apt-get install %s)", name, debianPackage))
	return p
}
