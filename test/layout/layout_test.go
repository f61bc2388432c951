package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/labvm/labvm"

// rule: no package in the dependency closure of roots may be one that
// forbidden names. forbidden returns why a package breaks the rule, or "".
type rule struct {
	name string
	// roots are go list patterns below the module path ("vm/..."); one
	// that matches nothing yet (guest/...) is fine.
	roots []string
	// tests adds the roots' tests (and their dependencies) to the closure.
	tests bool
	// forbidden says why pkg breaks the rule ("" when it does not).
	forbidden func(pkg *goPackage) string
	// knownFailure, when set, says why the rule does not hold yet: the test
	// then logs what breaks it and fails only once it holds.
	knownFailure string
}

var rules = []rule{
	{
		name:      "domain packages never import daemon/...",
		roots:     []string{"vm/...", "vm/guest", "network/...", "storage/...", "images/...", "guest/..."},
		tests:     true,
		forbidden: under(module + "/daemon"),
	},
	{
		// storage writes the guest's paths and runner into the seed, so it
		// imports vm/guest; the other way round would make them one package.
		name:      "vm/guest never imports storage (only storage -> vm/guest)",
		roots:     []string{"vm/guest"},
		tests:     true,
		forbidden: under(module + "/storage"),
	},
	{
		// vm/guest builds its requests from vm.ExecRequest.
		name:      "vm never imports vm/guest (only vm/guest -> vm)",
		roots:     []string{"vm"},
		tests:     true,
		forbidden: under(module + "/vm/guest"),
	},
	{
		name:      "daemon/api imports nothing of labvm",
		roots:     []string{"daemon/api"},
		tests:     true,
		forbidden: ourPackageOtherThan(module + "/daemon/api"),
	},
	{
		// The page is a client like the CLI: the daemon alone decides who
		// may do what, so the studio reaches it only through its API.
		name:      "cmd/labvm/studio reaches the daemon only through daemon/api and daemon/client",
		roots:     []string{"cmd/labvm/studio"},
		forbidden: daemonOtherThan(module+"/daemon/api", module+"/daemon/client"),
	},
	{
		name:      "cmd/labvm builds with CGO_ENABLED=0",
		roots:     []string{"cmd/labvm"},
		forbidden: needsCgo,
	},
	{
		name:      "daemon/store builds with CGO_ENABLED=0",
		roots:     []string{"daemon/store"},
		forbidden: needsCgo,
	},
}

func TestImportRules(t *testing.T) {
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			pkgs := goList(t, r.roots, r.tests)
			var broken []string
			for _, p := range pkgs {
				if why := r.forbidden(p); why != "" {
					broken = append(broken, fmt.Sprintf("%s\n\t\timport chain: %s", why, strings.Join(chain(pkgs, p.ImportPath), " -> ")))
				}
			}
			switch {
			case r.knownFailure == "" && len(broken) > 0:
				t.Errorf("rule broken:\n\t%s", strings.Join(broken, "\n\t"))
			case r.knownFailure != "" && len(broken) > 0:
				t.Logf("known failure (%s):\n\t%s", r.knownFailure, strings.Join(broken, "\n\t"))
			case r.knownFailure != "" && len(broken) == 0:
				t.Errorf("the rule holds now: delete its knownFailure (%q) so it stays that way", r.knownFailure)
			}
		})
	}
}

// goPackage is the part of `go list -json` the rules read.
type goPackage struct {
	ImportPath string
	Standard   bool
	CgoFiles   []string
	Imports    []string
	ForTest    string
	DepOnly    bool
	Error      *struct{ Err string }
}

// goList lists roots and everything they depend on.
func goList(t *testing.T, roots []string, tests bool) []*goPackage {
	t.Helper()
	args := []string{"list", "-e", "-deps", "-json"}
	if tests {
		args = append(args, "-test")
	}
	for _, r := range roots {
		args = append(args, module+"/"+r)
	}
	cmd := exec.Command("go", args...)
	// CgoFiles are listed only when cgo is on; the rules ask what would
	// break with it off.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, stderr.Bytes())
	}
	var pkgs []*goPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(goPackage)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		if p.Error != nil && !strings.Contains(p.Error.Err, "matched no packages") {
			t.Fatalf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// chain returns a path of imports from one of the listed roots to target.
func chain(pkgs []*goPackage, target string) []string {
	byPath := map[string]*goPackage{}
	var queue [][]string
	for _, p := range pkgs {
		byPath[p.ImportPath] = p
		if !p.DepOnly {
			queue = append(queue, []string{p.ImportPath})
		}
	}
	seen := map[string]bool{}
	for len(queue) > 0 {
		path := queue[0]
		queue = queue[1:]
		last := path[len(path)-1]
		if last == target {
			return path
		}
		if seen[last] || byPath[last] == nil {
			continue
		}
		seen[last] = true
		for _, imp := range byPath[last].Imports {
			queue = append(queue, append(slices.Clip(path), imp))
		}
	}
	return []string{target}
}

// basePath strips the test variant: "p [p.test]" and "p.test" are p.
func basePath(p *goPackage) string {
	path, _, _ := strings.Cut(p.ImportPath, " ")
	if p.ForTest == "" && strings.HasSuffix(path, ".test") {
		path = strings.TrimSuffix(path, ".test")
	}
	return path
}

// under forbids prefix and the packages below it.
func under(prefix string) func(*goPackage) string {
	return func(p *goPackage) string {
		if path := basePath(p); path == prefix || strings.HasPrefix(path, prefix+"/") {
			return p.ImportPath + " is under " + prefix
		}
		return ""
	}
}

// ourPackageOtherThan forbids every package of the module except self (and
// its tests).
func ourPackageOtherThan(self string) func(*goPackage) string {
	return func(p *goPackage) string {
		path := basePath(p)
		if path != self && (path == module || strings.HasPrefix(path, module+"/")) {
			return p.ImportPath + " is labvm's own"
		}
		return ""
	}
}

// daemonOtherThan forbids the packages under daemon/ except allowed.
func daemonOtherThan(allowed ...string) func(*goPackage) string {
	inDaemon := under(module + "/daemon")
	return func(p *goPackage) string {
		if slices.Contains(allowed, basePath(p)) {
			return ""
		}
		return inDaemon(p)
	}
}

// needsCgo forbids packages outside the standard library that have cgo
// files (the standard library's, such as net's, have pure-Go fallbacks).
func needsCgo(p *goPackage) string {
	if p.Standard || len(p.CgoFiles) == 0 {
		return ""
	}
	return fmt.Sprintf("%s needs cgo (%s and %d more files import \"C\")", p.ImportPath, p.CgoFiles[0], len(p.CgoFiles)-1)
}
