package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGenMan: `labvm __gen-man DIR` writes a page per visible command,
// dated by SOURCE_DATE_EPOCH, and never one for itself.
func TestGenMan(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000") // 2023-11-14
	a := &app{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, stdin: strings.NewReader("")}
	root := newRootCommand(a)
	root.SetArgs([]string{"__gen-man", dir})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, c := range root.Commands() {
		page := filepath.Join(dir, "labvm-"+c.Name()+".1")
		_, err := os.Stat(page)
		switch {
		case c.Hidden && err == nil:
			t.Errorf("hidden command %s got a man page", c.Name())
		case !c.Hidden && c.IsAvailableCommand() && err != nil:
			t.Errorf("no man page for %s: %v", c.Name(), err)
		}
	}
	create, err := os.ReadFile(filepath.Join(dir, "labvm-create.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`.TH "LABVM" "1" "Nov 2023" "labvm"`, "labvm-create"} {
		if !bytes.Contains(create, []byte(want)) {
			t.Errorf("labvm-create.1 lacks %q:\n%s", want, create[:min(len(create), 400)])
		}
	}

	root = newRootCommand(a)
	t.Setenv("SOURCE_DATE_EPOCH", "soon")
	root.SetArgs([]string{"__gen-man", t.TempDir()})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Errorf("bad SOURCE_DATE_EPOCH: %v", err)
	}
}
