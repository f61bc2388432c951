package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/api"
)

func TestReport(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		code     int
		contains []string
	}{
		{"ok", nil, 0, nil},
		{"api error with hint", &api.Error{Code: api.CodeConflict, Message: "cannot start: instance is already Running", Hint: "stop it first"}, 1,
			[]string{"Error: cannot start: instance is already Running\n", "Hint: stop it first\n"}},
		{"usage", usageErrorf("-o %q: use table or json", "xml"), 2, []string{"Error: -o \"xml\"", "Hint: run `labvm --help`"}},
		{"guest exit code", &exitError{code: 7}, 7, nil},
		{"interrupted", context.Canceled, 130, []string{"Interrupted."}},
		{"plain", errors.New("boom"), 1, []string{"Error: boom"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if got := report(&buf, tt.err); got != tt.code {
				t.Errorf("exit code %d, want %d", got, tt.code)
			}
			for _, s := range tt.contains {
				if !strings.Contains(buf.String(), s) {
					t.Errorf("output %q lacks %q", buf.String(), s)
				}
			}
		})
	}
}

// TestCommandsWithoutDaemon checks argument handling and the advice given
// when no daemon listens: both happen before or instead of a call.
func TestCommandsWithoutDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	tests := []cliCase{
		{[]string{"create"}, 2, "create takes NAME"},
		{[]string{"show", "a", "b"}, 2, "show takes NAME"},
		{[]string{"exec", "alice-dev"}, 2, "usage: labvm exec NAME -- COMMAND"},
		{[]string{"list", "-o", "yaml"}, 2, "use table or json"},
		{[]string{"delete", "alice-dev"}, 2, "--yes"},
		{[]string{"list"}, 1, "labvmd is not running"},
		{[]string{"logs", "alice-dev", "--setup", "--cloud-init"}, 2, "give one of --setup, --startup and --cloud-init"},
		{[]string{"logs", "alice-dev", "--cloud-init"}, 1, "labvmd is not running"},
		{[]string{"create", "x-dev", "--size", "Standard_B1s", "--image", "tiny", "--ssh-key", "/nonexistent.pub"}, 2, "--ssh-key"},
	}
	runWithoutDaemon(t, sock, tests)
}

// cliCase is a command line run against no daemon, and what it must say.
type cliCase struct {
	args []string
	code int
	want string
}

// runWithoutDaemon runs each case through the real command tree against a
// socket nobody listens on: argument checks and the advice given when the
// daemon is away both happen before or instead of a call.
func runWithoutDaemon(t *testing.T, sock string, cases []cliCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			a := &app{stdout: &out, stderr: &errb, stdin: strings.NewReader("")}
			root := newRootCommand(a)
			root.SetArgs(append([]string{"--socket", sock}, tt.args...))
			code := report(&errb, root.ExecuteContext(context.Background()))
			if code != tt.code || !strings.Contains(errb.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want %d mentioning %q", code, errb.String(), tt.code, tt.want)
			}
		})
	}
}
