package guest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runStreamEnd starts the guest end of a copy on this host, the way the
// agent would run req, and returns a function waiting for its exit.
func runStreamEnd(t *testing.T, path string, args []string, env []string) func() (string, error) {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return func() (string, error) { err := cmd.Wait(); return stderr.String(), err }
}

func dialRetry(t *testing.T, port int) *net.TCPConn {
	t.Helper()
	return dialFrom(t, loopbackHost, port)
}

// dialFrom connects to the guest end from the local address from, once
// it listens.
func dialFrom(t *testing.T, from netip.Addr, port int) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from.AsSlice()}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			return c.(*net.TCPConn)
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest end never listened on %d: %v", port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hello sends the token and reads the guest end's answer.
func hello(t *testing.T, c net.Conn, tok string) {
	t.Helper()
	if _, err := io.WriteString(c, tok+"\n"); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, len(StreamAck)+1)
	if _, err := io.ReadFull(c, ack); err != nil || string(ack) != StreamAck+"\n" {
		t.Fatalf("answer to the token: %q, %v", ack, err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// loopbackHost is the "host" the guest ends accept in these tests; the
// other clients connect from another loopback address.
var loopbackHost = netip.MustParseAddr("127.0.0.1")

type streamEnd struct {
	name string
	run  func(mode StreamMode, port int, p, tok string) (string, []string, []string)
}

// streamEnds are the guest ends this host can run: python3, and busybox
// nc where the host has busybox, each started as the guest would start it.
func streamEnds(t *testing.T) []streamEnd {
	var ends []streamEnd
	if _, err := exec.LookPath("python3"); err == nil {
		ends = append(ends, streamEnd{"python3", func(mode StreamMode, port int, p, tok string) (string, []string, []string) {
			req := StreamRequest(mode, port, p, tok, loopbackHost)
			return req.Path, req.Args, req.Env
		}})
	}
	if out, err := exec.Command("busybox", "nc", "--help").CombinedOutput(); err == nil || strings.Contains(string(out), "-e PROG") {
		ends = append(ends, streamEnd{"busybox nc", func(mode StreamMode, port int, p, tok string) (string, []string, []string) {
			req := StreamRequest(mode, port, p, tok, loopbackHost)
			return "/bin/sh", []string{"-c", streamBusybox, "labvm-cp", string(mode), fmt.Sprint(port), p, procNetHex(loopbackHost), streamShell}, req.Env
		}})
	}
	if len(ends) == 0 {
		t.Skip("neither python3 nor busybox on this host")
	}
	return ends
}

// TestStreamEnds runs both guest ends (python3, and busybox nc where the
// host has busybox) through every mode against a local connection: a
// wrong token gets nothing, the right one moves the bytes.
func TestStreamEnds(t *testing.T) {
	ends := streamEnds(t)
	payload := make([]byte, 3<<20+17)
	_, _ = rand.Read(payload)
	for _, e := range ends {
		t.Run(e.name, func(t *testing.T) {
			dir := t.TempDir()
			const tok = "0123456789abcdef0123456789abcdef"
			// in
			port := freePort(t)
			dst := filepath.Join(dir, "in.bin")
			path, args, env := e.run(StreamWrite, port, dst, tok)
			wait := runStreamEnd(t, path, args, env)
			c := dialRetry(t, port)
			hello(t, c, tok)
			if _, err := c.Write(payload); err != nil {
				t.Fatal(err)
			}
			_ = c.CloseWrite()
			_, _ = io.Copy(io.Discard, c)
			c.Close()
			if msg, err := wait(); err != nil {
				t.Fatalf("in: %v: %s", err, msg)
			}
			if got, _ := os.ReadFile(dst); !bytes.Equal(got, payload) {
				t.Fatalf("in: wrote %d bytes, want the %d sent", len(got), len(payload))
			}
			// out, after a connection with a wrong token: both ends keep
			// listening
			port = freePort(t)
			path, args, env = e.run(StreamRead, port, dst, tok)
			wait = runStreamEnd(t, path, args, env)
			c = dialRetry(t, port)
			_, _ = io.WriteString(c, strings.Repeat("f", len(tok))+"\n")
			if got, _ := io.ReadAll(c); len(got) != 0 {
				t.Fatalf("a wrong token got %d bytes", len(got))
			}
			c.Close()
			c = dialRetry(t, port)
			hello(t, c, tok)
			got, _ := io.ReadAll(c)
			c.Close()
			if msg, err := wait(); err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("out: %d bytes, %v: %s", len(got), err, msg)
			}
			// tar then untar: a tree round-trips
			src := filepath.Join(dir, "tree")
			_ = os.MkdirAll(filepath.Join(src, "sub"), 0o755)
			_ = os.WriteFile(filepath.Join(src, "sub", "x"), payload[:1000], 0o640)
			port = freePort(t)
			path, args, env = e.run(StreamPack, port, src, tok)
			wait = runStreamEnd(t, path, args, env)
			c = dialRetry(t, port)
			hello(t, c, tok)
			archive, _ := io.ReadAll(c)
			c.Close()
			if msg, err := wait(); err != nil {
				t.Fatalf("tar: %v: %s", err, msg)
			}
			unpacked := filepath.Join(dir, "unpacked")
			_ = os.Mkdir(unpacked, 0o700)
			port = freePort(t)
			path, args, env = e.run(StreamUnpack, port, unpacked, tok)
			wait = runStreamEnd(t, path, args, env)
			c = dialRetry(t, port)
			hello(t, c, tok)
			_, _ = c.Write(archive)
			_ = c.CloseWrite()
			_, _ = io.Copy(io.Discard, c)
			c.Close()
			if msg, err := wait(); err != nil {
				t.Fatalf("untar: %v: %s", err, msg)
			}
			if st, err := os.Stat(filepath.Join(unpacked, "sub", "x")); err != nil || st.Mode() != 0o640 || st.Size() != 1000 {
				t.Fatalf("untar: sub/x: %v, %v", st, err)
			}
		})
	}
}

// TestStreamEndsRefuseOthers is a hostile neighbour against the guest
// end: connections from another address, stalling or even carrying the
// right token, and (python3) one from the host that stalls, all come
// before the daemon's; the copy still goes through, and the neighbour
// gets nothing.
func TestStreamEndsRefuseOthers(t *testing.T) {
	other := netip.MustParseAddr("127.0.0.2")
	payload := make([]byte, 1<<20+3)
	_, _ = rand.Read(payload)
	for _, e := range streamEnds(t) {
		t.Run(e.name, func(t *testing.T) {
			const tok = "fedcba9876543210fedcba9876543210"
			src := filepath.Join(t.TempDir(), "src.bin")
			if err := os.WriteFile(src, payload, 0o600); err != nil {
				t.Fatal(err)
			}
			port := freePort(t)
			path, args, env := e.run(StreamRead, port, src, tok)
			wait := runStreamEnd(t, path, args, env)

			// A neighbour that connects and sends nothing is closed
			// at once, before anything is read.
			staller := dialFrom(t, other, port)
			defer staller.Close()
			_ = staller.SetReadDeadline(time.Now().Add(10 * time.Second))
			start := time.Now()
			if n, err := staller.Read(make([]byte, 1)); n != 0 || err == nil {
				t.Fatalf("a silent connection from %s: read %d bytes, %v; want it closed", other, n, err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("a silent connection from %s was closed only after %s", other, took)
			}
			// One from elsewhere with the right token gets no answer
			// and no data.
			thief := dialFrom(t, other, port)
			_, _ = io.WriteString(thief, tok+"\n")
			_ = thief.SetReadDeadline(time.Now().Add(10 * time.Second))
			if got, err := io.ReadAll(thief); len(got) != 0 {
				t.Fatalf("a connection from %s with the token got %d bytes (%v)", other, len(got), err)
			}
			thief.Close()
			if e.name == "python3" {
				// The host's own connections are served side by
				// side: one that stalls holds up nothing.
				slow := dialFrom(t, loopbackHost, port)
				defer slow.Close()
			}
			c := dialRetry(t, port)
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			hello(t, c, tok)
			got, err := io.ReadAll(c)
			c.Close()
			msg, werr := wait()
			if werr != nil || err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("the copy after the neighbour: %d of %d bytes (%v), guest end: %v: %s", len(got), len(payload), err, werr, msg)
			}
			// busybox says what it refused, which the daemon logs.
			if n := strings.Count(msg, StreamRefusedPrefix+"a connection from another address"); e.name == "busybox nc" && n != 2 {
				t.Fatalf("the busybox end reported %d refused connections from %s, want 2:\n%s", n, other, msg)
			}
		})
	}
}

func TestProcNetHex(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1", "0100007F"},
		{"10.177.0.1", "0100B10A"},
		{"192.168.122.254", "FE7AA8C0"},
	} {
		if got := procNetHex(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("procNetHex(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}
