package guest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labvm/labvm/test/hostreq"
)

// shells are the POSIX shells on this machine to check quoting against:
// dash (Debian's /bin/sh) and busybox ash, as in the test image.
func shells(t testing.TB) [][]string {
	var out [][]string
	if p, err := exec.LookPath("sh"); err == nil {
		out = append(out, []string{p})
	}
	if p, err := exec.LookPath("busybox"); err == nil {
		out = append(out, []string{p, "sh"})
	} else if hostreq.OnCI() {
		// The guests' shell is busybox ash: CI checks against it too.
		hostreq.RequireTool(t, "busybox", "busybox-static")
	}
	hostreq.Require(t, len(out) > 0, "no POSIX shell (sh or busybox) in PATH")
	return out
}

func TestValidateCommand(t *testing.T) {
	tests := []struct {
		argv []string
		ok   bool
	}{
		{[]string{"echo", "hi"}, true},
		{nil, false},
		{[]string{""}, false},
		{[]string{"echo", "a\x00b"}, false},
	}
	for _, tt := range tests {
		if err := ValidateCommand(tt.argv); (err == nil) != tt.ok {
			t.Errorf("ValidateCommand(%q) = %v", tt.argv, err)
		}
	}
}

// TestJobStartScriptRuns runs the wrapper with a real shell, with the
// output directory moved into a temp dir: output lands in the files, the
// exit code is the command's, and hostile arguments stay arguments.
func TestJobStartScriptRuns(t *testing.T) {
	dir := t.TempDir()
	req, err := JobStartRequest(7, []string{"sh", "-c", `echo "out:$1"; echo err >&2; exit 3`, "x", "$(touch " + dir + "/pwned)"})
	if err != nil {
		t.Fatal(err)
	}
	script := strings.ReplaceAll(req.Args[1], JobDir, dir+"/jobs")
	for _, sh := range shells(t) {
		args := append(append([]string{}, sh[1:]...), "-c", script)
		err := exec.Command(sh[0], args...).Run()
		ee, isExit := err.(*exec.ExitError)
		if !isExit || ee.ExitCode() != 3 {
			t.Fatalf("%v: %v, want exit 3", sh, err)
		}
		out, _ := os.ReadFile(filepath.Join(dir, "jobs", "7.out"))
		errOut, _ := os.ReadFile(filepath.Join(dir, "jobs", "7.err"))
		if string(out) != "out:$(touch "+dir+"/pwned)\n" || string(errOut) != "err\n" {
			t.Fatalf("%v: out %q err %q", sh, out, errOut)
		}
		if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
			t.Fatal("an argument was run as a command")
		}
	}
	if _, err := JobStartRequest(1, nil); err == nil {
		t.Fatal("empty command accepted")
	}
}

func TestJobReadScript(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "1.out")
	data := []byte("0123456789abcdef")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		path       string
		off        int64
		max        int
		wantOffset int64
		wantData   string
		wantSize   int64
	}{
		{"from start", file, 0, 100, 0, string(data), 16},
		{"from offset", file, 10, 100, 10, "abcdef", 16},
		{"bounded", file, 2, 3, 2, "234", 16},
		{"at end", file, 16, 100, 16, "", 16},
		{"last bytes", file, -1, 4, 12, "cdef", 16},
		{"last bytes of small file", file, -1, 100, 0, string(data), 16},
		{"missing file", filepath.Join(dir, "none"), 0, 100, 0, "", 0},
	}
	for _, sh := range shells(t) {
		for _, tt := range tests {
			t.Run(filepath.Base(sh[len(sh)-1])+"/"+tt.name, func(t *testing.T) {
				req := JobReadRequest(tt.path, tt.off, tt.max)
				args := append(append([]string{}, sh[1:]...), req.Args...)
				out, err := exec.Command(sh[0], args...).Output()
				if err != nil {
					t.Fatal(err)
				}
				c, err := ParseJobRead(out)
				if err != nil {
					t.Fatal(err)
				}
				if c.Size != tt.wantSize || c.Offset != tt.wantOffset || !bytes.Equal(c.Data, []byte(tt.wantData)) {
					t.Fatalf("chunk = %d %d %q", c.Size, c.Offset, c.Data)
				}
			})
		}
	}
}

func TestParseJobReadRejectsGarbage(t *testing.T) {
	for _, in := range []string{"", "12", "x\n0\n", "1\n-2\n", "5\n"} {
		if _, err := ParseJobRead([]byte(in)); err == nil {
			t.Errorf("ParseJobRead(%q) accepted", in)
		}
	}
}
