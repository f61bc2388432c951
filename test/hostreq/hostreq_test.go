package hostreq

import (
	"fmt"
	"testing"
)

// recorder stands in for a test: it notes a skip or a failure instead of
// stopping the goroutine, so Require's choice can be checked.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skipf(format string, a ...any)  { r.skipped = fmt.Sprintf(format, a...) }
func (r *recorder) Fatalf(format string, a ...any) { r.failed = fmt.Sprintf(format, a...) }

func TestRequire(t *testing.T) {
	for _, tt := range []struct {
		ci          string
		ok          bool
		wantSkipped string
		wantFailed  string
	}{
		{ci: "", ok: true},
		{ci: "true", ok: true},
		{ci: "", ok: false, wantSkipped: "prerequisite missing: the thing"},
		{ci: "false", ok: false, wantSkipped: "prerequisite missing: the thing"},
		{ci: "true", ok: false, wantFailed: "CI=true and prerequisite missing: the thing"},
	} {
		t.Run(fmt.Sprintf("CI=%q,ok=%v", tt.ci, tt.ok), func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			r := &recorder{TB: t}
			Require(r, tt.ok, "the thing")
			if r.skipped != tt.wantSkipped || r.failed != tt.wantFailed {
				t.Errorf("skipped %q, failed %q; want skipped %q, failed %q", r.skipped, r.failed, tt.wantSkipped, tt.wantFailed)
			}
		})
	}
}

func TestRequireToolNamesThePackage(t *testing.T) {
	t.Setenv("CI", "")
	r := &recorder{TB: t}
	RequireTool(r, "labvm-no-such-tool", "labvm-pkg")
	if want := "prerequisite missing: labvm-no-such-tool not in PATH (apt-get install labvm-pkg)"; r.skipped != want {
		t.Errorf("skipped %q, want %q", r.skipped, want)
	}
}
