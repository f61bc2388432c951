package api

import (
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// TestImportsNothingOfOurs keeps the wire types a leaf: if api imported a
// domain package, internal types would leak into the protocol.
func TestImportsNothingOfOurs(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") {
			continue
		}
		f, err := parser.ParseFile(fset, e.Name(), nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			if strings.Contains(imp.Path.Value, "github.com/labvm/labvm") {
				t.Errorf("%s imports %s; daemon/api must import nothing of labvm's", e.Name(), imp.Path.Value)
			}
		}
	}
}
