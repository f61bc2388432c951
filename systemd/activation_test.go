package systemd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labvm/labvm/test/hostreq"
)

// helperEnv switches the test binary into TestHelperProcess when the tests
// below re-execute it as a socket-activated child.
const (
	helperEnv     = "LABVM_SYSTEMD_HELPER"
	helperNameEnv = "LABVM_SYSTEMD_HELPER_NAME"
)

// TestHelperProcess is not a test: it is the child the activation tests
// start, with a listening socket as fd 3. It takes the socket through the
// package's real code path and reports what it saw, on stdout and, when it
// got a listener, to the first client that connects.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return // run normally: nothing to do
	}
	// Read before FromEnvironment, which unsets it along with systemd's.
	name := os.Getenv(helperNameEnv)
	_, act, err := FromEnvironment()
	if err != nil {
		fmt.Printf("helper: error %v\n", err)
		os.Exit(1)
	}
	ln, err := act.APIListener(name)
	if err != nil {
		fmt.Printf("helper: error %v\n", err)
		os.Exit(1)
	}
	report := helperReport(ln, act)
	fmt.Println("helper: " + report)
	if ln == nil {
		os.Exit(0)
	}
	if err := ln.(*net.UnixListener).SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		fmt.Printf("helper: error %v\n", err)
		os.Exit(1)
	}
	conn, err := ln.Accept()
	if err != nil {
		fmt.Printf("helper: error accept: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintln(conn, report)
	conn.Close()
	os.Exit(0)
}

// helperReport describes what the helper was handed: how many listeners
// under which names, whether systemd's variables are gone (children must
// not inherit them), whether the raw fd 3 is still open, and whether the
// listener's descriptor is close-on-exec.
func helperReport(ln net.Listener, act *Activation) string {
	lns, _ := act.Listeners()
	left := ""
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(k); ok {
			left += k + "=" + v + " "
		}
	}
	fd3 := "open"
	if _, err := unix.FcntlInt(3, unix.F_GETFD, 0); errors.Is(err, unix.EBADF) {
		fd3 = "closed"
	}
	r := fmt.Sprintf("listeners=%d names=%s env=%q fd3=%s", len(lns), strings.Join(act.Names(), ":"), strings.TrimSpace(left), fd3)
	if ln == nil {
		return r
	}
	cloexec := "unknown"
	if rc, err := ln.(*net.UnixListener).SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { // on failure cloexec stays "unknown"
			flags, err := unix.FcntlInt(fd, unix.F_GETFD, 0)
			cloexec = fmt.Sprint(err == nil && flags&unix.FD_CLOEXEC != 0)
		})
	}
	return r + " cloexec=" + cloexec
}

// testSocketPath returns a socket path short enough for sun_path (108
// bytes), which a long t.TempDir() under a long test name could exceed.
func testSocketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "labvm-sd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "api.sock")
}

func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("find test binary: %v", err)
	}
	return exe
}

// askHelper connects to the socket and returns the helper's one-line answer.
func askHelper(ctx context.Context, path string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return "", fmt.Errorf("dial %s: %w", path, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read answer: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// helperLine picks the helper's report out of the child's stdout.
func helperLine(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if r, ok := strings.CutPrefix(l, "helper: "); ok {
			return r
		}
	}
	return ""
}

// TestActivationFDPassing hands real listening sockets to a child as fd 3
// onwards, the way systemd does. LISTEN_PID must be the child's own pid,
// which the parent cannot know before the fork, so a shell sets
// LISTEN_PID=$$ and then execs the test binary, keeping its pid.
func TestActivationFDPassing(t *testing.T) {
	tests := []struct {
		name      string
		listenPID string // "self": the child's own pid
		fdNames   string // one socket per name
		lookup    string // name passed to APIListener
		serves    int    // index of the socket that must answer; -1 none
		want      string
	}{
		{
			name: "one socket, by name", listenPID: "self", fdNames: "labvmd.socket", lookup: "labvmd.socket", serves: 0,
			want: `listeners=1 names=labvmd.socket env="" fd3=closed cloexec=true`,
		},
		{
			// A single socket is ours whatever systemd calls it.
			name: "one socket, another name", listenPID: "self", fdNames: "api.socket", lookup: "labvmd.socket", serves: 0,
			want: `listeners=1 names=api.socket env="" fd3=closed cloexec=true`,
		},
		{
			// fd 3 is open again here: closing the first passed descriptor
			// freed the number, and the duplicate of the second took it.
			name: "several, one named labvmd.socket", listenPID: "self", fdNames: "metrics.socket:labvmd.socket", lookup: "labvmd.socket", serves: 1,
			want: `listeners=2 names=metrics.socket:labvmd.socket env="" fd3=open cloexec=true`,
		},
		{
			name: "several, none named labvmd.socket", listenPID: "self", fdNames: "a.socket:b.socket", lookup: "labvmd.socket", serves: -1,
			want: `error systemd passed 2 sockets (a.socket, b.socket) and none is named labvmd.socket: pass only the API socket, or set FileDescriptorName=labvmd.socket in its socket unit`,
		},
		{
			// The descriptor belongs to another process: not touched, not
			// closed, but the variables are still cleared for children.
			name: "for another process", listenPID: "1", fdNames: "labvmd.socket", serves: -1,
			want: `listeners=0 names= env="" fd3=open`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			names := strings.Split(tt.fdNames, ":")
			var paths []string
			var files []*os.File
			for range names {
				path := testSocketPath(t)
				ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
				if err != nil {
					t.Fatal(err)
				}
				// The child owns the socket from here; closing our copy
				// must not unlink the path it serves on.
				ln.SetUnlinkOnClose(false)
				f, err := ln.File()
				if err != nil {
					t.Fatal(err)
				}
				ln.Close()
				paths, files = append(paths, path), append(files, f)
			}

			args := []string{testBinary(t), "-test.run=^TestHelperProcess$"}
			env := append(os.Environ(), helperEnv+"=1", helperNameEnv+"="+tt.lookup,
				fmt.Sprintf("LISTEN_FDS=%d", len(names)), "LISTEN_FDNAMES="+tt.fdNames)
			if tt.listenPID == "self" {
				args = append([]string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`}, args...)
			} else {
				env = append(env, "LISTEN_PID="+tt.listenPID)
			}
			cmd := exec.CommandContext(ctx, args[0], args[1:]...)
			cmd.Env = env
			cmd.ExtraFiles = files // fd 3, 4, ...
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatalf("start helper: %v", err)
			}
			for _, f := range files {
				f.Close()
			}

			if tt.serves >= 0 {
				got, err := askHelper(ctx, paths[tt.serves])
				if err != nil {
					t.Fatalf("%v; helper output:\n%s", err, out.String())
				}
				if got != tt.want {
					t.Errorf("answer over the socket = %q, want %q", got, tt.want)
				}
			}
			_ = cmd.Wait() // the exit status is judged by the report below
			if got := helperLine(out.String()); got != tt.want {
				t.Errorf("helper reported %q, want %q; output:\n%s", got, tt.want, out.String())
			}
		})
	}
}

// TestSystemdSocketActivate runs the helper under systemd's own activation
// tool, which creates the socket, waits for a client and execs the helper
// with LISTEN_* set as systemd would.
func TestSystemdSocketActivate(t *testing.T) {
	tool := hostreq.RequireTool(t, "systemd-socket-activate", "systemd")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := testSocketPath(t)
	cmd := exec.CommandContext(ctx, tool, "-l", path, "--fdname=labvmd.socket",
		"-E", helperEnv+"=1", "-E", helperNameEnv+"=labvmd.socket",
		testBinary(t), "-test.run=^TestHelperProcess$")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", tool, err)
	}
	defer func() { _ = cmd.Wait() }()
	defer cancel()

	// The tool creates the socket before it waits for the first client.
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never created %s; output:\n%s", tool, path, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	got, err := askHelper(ctx, path)
	if err != nil {
		t.Fatalf("%v; output:\n%s", err, out.String())
	}
	want := `listeners=1 names=labvmd.socket env="" fd3=closed cloexec=true`
	if got != want {
		t.Errorf("answer = %q, want %q; output:\n%s", got, want, out.String())
	}
}

func TestActivationNone(t *testing.T) {
	for name, a := range map[string]*Activation{"zero": {}, "nil": nil} {
		t.Run(name, func(t *testing.T) {
			lns, err := a.Listeners()
			if err != nil || len(lns) != 0 {
				t.Errorf("Listeners() = %v, %v; want none", lns, err)
			}
			ln, err := a.APIListener(APISocketName)
			if err != nil || ln != nil {
				t.Errorf("APIListener() = %v, %v; want nil, nil", ln, err)
			}
		})
	}
}
