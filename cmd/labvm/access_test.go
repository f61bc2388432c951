package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseForward(t *testing.T) {
	tests := []struct {
		in            string
		local, remote int
		wantErr       string
	}{
		{in: "80", local: 0, remote: 80},
		{in: "8888:80", local: 8888, remote: 80},
		{in: "65535:1", local: 65535, remote: 1},
		{in: "70000", wantErr: `REMOTE port "70000"`},
		{in: "0", wantErr: `REMOTE port "0"`},
		{in: "8888:", wantErr: `REMOTE port ""`},
		{in: ":80", wantErr: `LOCAL port ""`},
		{in: "x:80", wantErr: `LOCAL port "x"`},
		{in: "1:2:3", wantErr: `REMOTE port "2:3"`},
		{in: "", wantErr: `REMOTE port ""`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			local, remote, err := parseForward(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %s", err, tt.wantErr)
				}
				return
			}
			if err != nil || local != tt.local || remote != tt.remote {
				t.Fatalf("= %d, %d, %v; want %d, %d", local, remote, err, tt.local, tt.remote)
			}
		})
	}
}

func TestDetachReader(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"no detach key passes everything", "ls -l\r", "ls -l\r"},
		{"input stops at Ctrl-]", "echo hi\r\x1dexit\r", "echo hi\r"},
		{"Ctrl-] alone", "\x1d", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := io.ReadAll(&detachReader{r: strings.NewReader(tt.in)})
			if err != nil || string(got) != tt.want {
				t.Fatalf("read %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestAccessCommandsWithoutDaemon checks what is refused before any call.
func TestAccessCommandsWithoutDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	tests := []cliCase{
		{[]string{"tunnel", "alice-dev"}, 2, "tunnel takes NAME and PORT"},
		{[]string{"tunnel", "alice-dev", "70000"}, 2, `port "70000": want a number from 1 to 65535`},
		{[]string{"forward", "alice-dev", "70000"}, 2, `REMOTE port "70000"`},
		{[]string{"forward", "alice-dev", "x:80"}, 2, `LOCAL port "x"`},
		{[]string{"ssh"}, 2, "usage: labvm ssh NAME"},
		{[]string{"ssh", "alice-dev", "hostname"}, 2, "usage: labvm ssh NAME"},
		{[]string{"ssh-config"}, 2, "ssh-config takes NAME"},
		{[]string{"console", "a", "b"}, 2, "console takes NAME"},
		{[]string{"tunnel", "alice-dev", "22"}, 1, "labvmd is not running"},
		{[]string{"console", "alice-dev"}, 1, "labvmd is not running"},
		{[]string{"forward", "alice-dev", "80"}, 1, "labvmd is not running"},
	}
	runWithoutDaemon(t, sock, tests)
}
