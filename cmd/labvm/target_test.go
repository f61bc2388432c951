package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// setEnv sets the target variables for one test, unset when not in env.
func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, k := range []string{"LABVM_HOST", "LABVM_CONTEXT", "LABVM_SOCKET"} {
		t.Setenv(k, env[k])
		if env[k] == "" {
			_ = os.Unsetenv(k)
		}
	}
}

// runCLI runs labvm's root command in-process.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	a := &app{stdout: &out, stderr: io.Discard, stdin: strings.NewReader("")}
	root := newRootCommand(a)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// chosen parses args for `labvm info` the way a run would and returns
// the daemon chosen: the app after prepare.
func chosen(t *testing.T, env map[string]string, args ...string) (*app, error) {
	t.Helper()
	setEnv(t, env)
	a := &app{stdout: io.Discard, stderr: io.Discard}
	root := newRootCommand(a)
	cmd, rest, err := root.Find(append(args, "info"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.ParseFlags(append(args, rest...)); err != nil {
		t.Fatal(err)
	}
	return a, a.prepare(cmd)
}

func TestContextsAndTargetChoice(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	setEnv(t, nil)
	must := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, args...)
		if err != nil {
			t.Fatalf("labvm %v: %v", args, err)
		}
		return out
	}
	fails := func(want string, args ...string) {
		t.Helper()
		_, err := runCLI(t, args...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("labvm %v: %v, want an error with %q", args, err, want)
		}
	}
	must("context", "add", "node3", "ssh://alice@node3:2222", "--socket", "/run/x.sock")
	must("context", "add", "node4", "ssh://node4")
	fails("exists", "context", "add", "node3", "ssh://node3")
	fails("default", "context", "add", "default", "ssh://node3")
	fails("letters", "context", "add", "a b", "ssh://node3")
	fails("only ssh://", "context", "add", "x", "tcp://node3")
	fails("no context named nope", "context", "use", "nope")
	fails("no context named nope", "context", "remove", "nope")
	fails("cannot be removed", "context", "remove", "default")
	if out := must("context", "list"); !strings.Contains(out, "*  default") {
		t.Fatalf("default is not current at first:\n%s", out)
	}
	must("context", "use", "node3")
	if out := must("context", "list"); !strings.Contains(out, "*  node3") || strings.Contains(out, "*  default") {
		t.Fatalf("node3 is not the one current:\n%s", out)
	}

	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		remote string // "" for this host's socket
		socket string // the far socket, or this host's
	}{
		{"the current context", nil, nil, "ssh://alice@node3:2222", "/run/x.sock"},
		{"--context wins over the current one", nil, []string{"--context", "node4"}, "ssh://node4", ""},
		{"LABVM_CONTEXT", map[string]string{"LABVM_CONTEXT": "node4"}, nil, "ssh://node4", ""},
		{"--host wins over contexts", map[string]string{"LABVM_CONTEXT": "node4"}, []string{"--host", "ssh://bob@node5"}, "ssh://bob@node5", ""},
		{"LABVM_HOST", map[string]string{"LABVM_HOST": "ssh://carol@node6"}, nil, "ssh://carol@node6", ""},
		{"--socket with --host is the far socket", nil, []string{"--host", "ssh://node5", "--socket", "/far.sock"}, "ssh://node5", "/far.sock"},
		{"LABVM_SOCKET with --host stays here", map[string]string{"LABVM_SOCKET": "/near.sock"}, []string{"-H", "ssh://node5"}, "ssh://node5", ""},
		{"--socket alone is this host", nil, []string{"--socket", "/near.sock"}, "", "/near.sock"},
		{"LABVM_SOCKET alone is this host", map[string]string{"LABVM_SOCKET": "/near.sock"}, nil, "", "/near.sock"},
		{"--context default is this host", nil, []string{"--context", "default"}, "", "/run/labvm/labvm.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := chosen(t, tt.env, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.remote == "" && a.remote != nil:
				t.Fatalf("chose %s, want this host's %s", a.remote, tt.socket)
			case tt.remote == "" && a.localSocket() != tt.socket:
				t.Fatalf("chose socket %s, want %s", a.localSocket(), tt.socket)
			case tt.remote != "" && (a.remote == nil || a.remote.URL() != tt.remote || a.remote.Socket != tt.socket):
				t.Fatalf("chose %+v, want %s with far socket %q", a.remote, tt.remote, tt.socket)
			}
		})
	}

	t.Run("a bad --host or unknown --context is refused before any call", func(t *testing.T) {
		if _, err := chosen(t, nil, "--host", "node5"); err == nil || !strings.Contains(err.Error(), "only ssh://") {
			t.Fatalf("--host node5: %v", err)
		}
		if _, err := chosen(t, nil, "--context", "nope"); err == nil || !strings.Contains(err.Error(), "no context named nope") {
			t.Fatalf("--context nope: %v", err)
		}
	})

	t.Run("the ProxyCommand of labvm ssh names the same daemon", func(t *testing.T) {
		a, err := chosen(t, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"--host", "ssh://alice@node3:2222", "--socket", "/run/x.sock"}
		if got := a.targetArgs(); !slices.Equal(got, want) {
			t.Fatalf("targetArgs = %q, want %q", got, want)
		}
		if got := proxyCommand("/usr/bin/labvm", a.targetArgs(), "alice-dev"); got != "/usr/bin/labvm --host ssh://alice@node3:2222 --socket /run/x.sock tunnel alice-dev 22" {
			t.Fatalf("ProxyCommand %q", got)
		}
	})

	must("context", "remove", "node3")
	if out := must("context", "list"); !strings.Contains(out, "*  default") || strings.Contains(out, "node3") {
		t.Fatalf("after removing the current context:\n%s", out)
	}
}

func TestDialStdio(t *testing.T) {
	srvConn, cliConn := unixPair(t)
	in := strings.NewReader("request")
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- dialStdio(context.Background(), cliConn, in, &out) }()
	// The daemon side reads the request to its end (a half-close), then
	// answers and closes: dial-stdio returns with the answer written.
	got, err := io.ReadAll(srvConn)
	if err != nil || string(got) != "request" {
		t.Fatalf("daemon read %q, %v", got, err)
	}
	if _, err := srvConn.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	srvConn.Close()
	select {
	case err := <-done:
		if err != nil || out.String() != "answer" {
			t.Fatalf("dialStdio = %v, wrote %q", err, out.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("dialStdio did not return after the daemon closed")
	}
}

func TestDialStdioReturnsWhenTheDaemonCloses(t *testing.T) {
	srvConn, cliConn := unixPair(t)
	in, inW := io.Pipe() // input that never ends, as ssh's may not
	defer func() { _ = inW.Close() }()
	done := make(chan error, 1)
	go func() { done <- dialStdio(context.Background(), cliConn, in, io.Discard) }()
	srvConn.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dialStdio: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("dialStdio waited for its input after the daemon closed")
	}
}

// unixPair is a connected pair of Unix stream sockets.
func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	path := t.TempDir() + "/s"
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return s, c
}
