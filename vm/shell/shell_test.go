package shell

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/test/hostreq"
)

func TestQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "''"},
		{"train.py", "train.py"},
		{"--epochs=3", "--epochs=3"},
		{"a b", "'a b'"},
		{"it's", `'it'\''s'`},
		{"'", `''\'''`},
		{"$(reboot)", "'$(reboot)'"},
		{"`id`", "'`id`'"},
		{"a;b", "'a;b'"},
		{"x\ny", "'x\ny'"},
		{"*", "'*'"},
		{"~", "'~'"},
		{"héllo", "'héllo'"},
		{`\`, `'\'`},
	}
	for _, tt := range tests {
		if got := Quote(tt.in); got != tt.want {
			t.Errorf("Quote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

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

// echoBack has a shell print each word of line NUL-terminated, so the
// test sees exactly the words the shell parsed.
func echoBack(t testing.TB, sh []string, line string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args := append(append([]string{}, sh[1:]...), "-c", `printf '%s\0' `+line)
	out, err := exec.CommandContext(ctx, sh[0], args...).Output()
	if err != nil {
		t.Fatalf("%v -c %q: %v", sh, line, err)
	}
	words := strings.Split(string(out), "\x00")
	return words[:len(words)-1]
}

func TestJoinThroughRealShells(t *testing.T) {
	argv := []string{"python3", "train.py", "--epochs", "3", "", "a b", "it's", "$HOME", "`id`", "x\ny", "*", "é", `\n`, "-", "'\"'"}
	for _, sh := range shells(t) {
		got := echoBack(t, sh, Join(argv...))
		if strings.Join(got, "\x00") != strings.Join(argv, "\x00") {
			t.Errorf("%v parsed %q, want %q", sh, got, argv)
		}
	}
}

func FuzzQuote(f *testing.F) {
	for _, s := range []string{"", "a", "a b", "'", `'\''`, "$(id)", "\"", "\n", "é", "--x=y", "\xff"} {
		f.Add(s)
	}
	shs := shells(f)
	f.Fuzz(func(t *testing.T, s string) {
		q := Quote(s)
		// Outside single quotes only ' and \ may appear, and only as '\''.
		if q != s && (!strings.HasPrefix(q, "'") || !strings.HasSuffix(q, "'")) {
			t.Fatalf("Quote(%q) = %s: neither bare nor single-quoted", s, q)
		}
		if q == s && strings.IndexFunc(s, needsQuote) >= 0 {
			t.Fatalf("Quote(%q) left special characters bare", s)
		}
		if strings.IndexByte(s, 0) >= 0 {
			return // no argv can hold NUL; guest.ValidateCommand refuses it
		}
		for _, sh := range shs {
			got := echoBack(t, sh, q)
			if len(got) != 1 || got[0] != s {
				t.Fatalf("%v parsed Quote(%q) = %s as %q", sh, s, q, got)
			}
		}
	})
}
