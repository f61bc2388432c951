package client

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

func TestParseSSHURL(t *testing.T) {
	tests := []struct {
		in      string
		want    SSHTarget
		wantErr string
	}{
		{in: "ssh://node3", want: SSHTarget{Host: "node3"}},
		{in: "ssh://alice@node3:2222", want: SSHTarget{User: "alice", Host: "node3", Port: 2222}},
		{in: "ssh://alice@node3/", want: SSHTarget{User: "alice", Host: "node3"}},
		{in: "ssh://[fd00::3]:22", want: SSHTarget{Host: "fd00::3", Port: 22}},
		{in: "node3", wantErr: "only ssh://"},
		{in: "tcp://node3:2375", wantErr: "only ssh://"},
		{in: "ssh://", wantErr: "no host name"},
		{in: "ssh:node3", wantErr: "no host name"},
		{in: "ssh://alice:secret@node3", wantErr: "password"},
		{in: "ssh://node3/run/labvm.sock", wantErr: "--socket"},
		{in: "ssh://node3?x=1", wantErr: "query"},
		{in: "ssh://node3:0", wantErr: "port"},
		{in: "ssh://node3:99999", wantErr: "port"},
		{in: "ssh://-oProxyCommand=x", wantErr: "'-'"},
		{in: "ssh://-x@node3", wantErr: "'-'"},
		{in: "ssh://no de", wantErr: "not a URL"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSSHURL(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSSHURL(%q) = %+v, %v; want an error with %q", tt.in, got, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSSHURL(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			back, err := ParseSSHURL(got.URL())
			if err != nil || back != got {
				t.Fatalf("URL() %q does not read back: %+v, %v", got.URL(), back, err)
			}
		})
	}
}

func TestSSHArgs(t *testing.T) {
	tests := []struct {
		t    SSHTarget
		want []string
	}{
		{SSHTarget{Host: "node3"}, []string{"-T", "-o", "ConnectTimeout=30", "--", "node3", "labvm dial-stdio"}},
		{SSHTarget{User: "alice", Host: "node3", Port: 2222, Socket: "/run/it's.sock"},
			[]string{"-T", "-o", "ConnectTimeout=30", "-l", "alice", "-p", "2222", "--", "node3", `labvm --socket '/run/it'\''s.sock' dial-stdio`}},
	}
	for _, tt := range tests {
		if got := tt.t.Args(); !slices.Equal(got, tt.want) {
			t.Errorf("%+v.Args() =\n%q, want\n%q", tt.t, got, tt.want)
		}
	}
}

// fakeSSH writes a script standing in for ssh and returns its path.
func fakeSSH(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ssh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCommandConnCarriesBytesAndHalfClose(t *testing.T) {
	// cat echoes until its input ends, then exits 0: a half-close must
	// reach it and the echo must still be read in full.
	conn, err := startCommandConn(context.Background(), "test", "/bin/cat", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*commandConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v; want hello, nil", got, err)
	}
}

func TestCommandConnFailureCarriesStderr(t *testing.T) {
	ssh := fakeSSH(t, `echo "Permission denied (publickey)." >&2; exit 255`)
	conn, err := startCommandConn(context.Background(), "ssh://node3", ssh, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = io.ReadAll(conn)
	var re *RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Stderr, "Permission denied") || !strings.Contains(err.Error(), "exit status 255") {
		t.Fatalf("read error %v; want a RemoteError with ssh's stderr and exit status", err)
	}
}

func TestCommandConnCloseEndsTheProcess(t *testing.T) {
	// A child that ignores end of input and SIGTERM is killed.
	ssh := fakeSSH(t, `trap '' TERM; while :; do sleep 1; done`)
	conn, err := startCommandConn(context.Background(), "test", ssh, nil)
	if err != nil {
		t.Fatal(err)
	}
	cc := conn.(*commandConn)
	start := time.Now()
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cc.exited:
	default:
		t.Fatal("Close returned with the process still running")
	}
	if d := time.Since(start); d > 3*exitGrace {
		t.Fatalf("Close took %v", d)
	}
	// A blocked read returns once closed.
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after Close succeeded")
	}
}

func TestSSHClientReportsFailureWithHint(t *testing.T) {
	target := SSHTarget{User: "alice", Host: "node3", Port: 2222, SSH: fakeSSH(t, `echo "labvm: command not found" >&2; exit 127`)}
	c, err := NewSSH(target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for name, call := range map[string]func() error{
		"request": func() error { _, err := c.Info(ctx); return err },
		"tunnel":  func() error { _, err := c.Tunnel(ctx, "alice-dev", 22); return err },
	} {
		err := call()
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeUnavailable ||
			!strings.Contains(ae.Message, "command not found") || !strings.Contains(ae.Message, "ssh://alice@node3:2222") ||
			!strings.Contains(ae.Hint, "ssh -l alice -p 2222 -- node3 labvm info") {
			t.Errorf("%s: %#v; want Unavailable naming the host, ssh's words and how to check", name, err)
		}
	}
}

func TestSSHClientMissingSSH(t *testing.T) {
	c, err := NewSSH(SSHTarget{Host: "node3", SSH: filepath.Join(t.TempDir(), "no-ssh")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Info(context.Background())
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeUnavailable || !strings.Contains(ae.Hint, "openssh-client") {
		t.Fatalf("%v; want Unavailable saying to install ssh", err)
	}
}
