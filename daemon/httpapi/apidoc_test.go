package httpapi_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/daemontest"
)

// TestAPIDocMatchesRouteTable keeps docs/API.md from drifting: every route
// is documented with the permission the server checks, and every
// documented route exists.
func TestAPIDocMatchesRouteTable(t *testing.T) {
	raw, err := os.ReadFile("../../docs/API.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| (GET|POST|PUT|PATCH|DELETE) \\| `([^`]*)` \\| `([^`]*)`( on the instance)? \\|")
	documented := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		path := m[2]
		if i := strings.IndexAny(path, "?["); i >= 0 {
			path = path[:i]
		}
		documented[m[1]+" "+path] = m[3] + m[4]
	}
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	for _, r := range td.API().Routes() {
		want := r.Permission.String()
		if r.Instance {
			want += " on the instance"
		}
		got, ok := documented[r.Pattern]
		switch {
		case !ok:
			t.Errorf("docs/API.md does not document %s", r.Pattern)
		case got != want:
			t.Errorf("docs/API.md gives %s the permission %q; the route table says %q", r.Pattern, got, want)
		}
		delete(documented, r.Pattern)
	}
	for p := range documented {
		t.Errorf("docs/API.md documents %s, which the route table does not have", p)
	}
}
