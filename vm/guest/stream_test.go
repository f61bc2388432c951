package guest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
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
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
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

// TestStreamEnds runs both guest ends (python3, and busybox nc where the
// host has busybox) through every mode against a local connection: a
// wrong token gets nothing, the right one moves the bytes.
func TestStreamEnds(t *testing.T) {
	type end struct {
		name string
		run  func(mode StreamMode, port int, p, tok string) (string, []string, []string)
	}
	var ends []end
	if _, err := exec.LookPath("python3"); err == nil {
		ends = append(ends, end{"python3", func(mode StreamMode, port int, p, tok string) (string, []string, []string) {
			req := StreamRequest(mode, port, p, tok)
			return req.Path, req.Args, req.Env
		}})
	}
	if out, err := exec.Command("busybox", "nc", "--help").CombinedOutput(); err == nil || strings.Contains(string(out), "-e PROG") {
		ends = append(ends, end{"busybox nc", func(mode StreamMode, port int, p, tok string) (string, []string, []string) {
			req := StreamRequest(mode, port, p, tok)
			return "busybox", []string{"nc", "-l", "-p", fmt.Sprint(port), "-e", "/bin/sh", "-c", streamShell, "labvm-cp", string(mode), p}, req.Env
		}})
	}
	if len(ends) == 0 {
		t.Skip("neither python3 nor busybox on this host")
	}
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
			// out, after a connection with a wrong token (python keeps
			// listening; busybox nc takes one connection and refuses it)
			port = freePort(t)
			path, args, env = e.run(StreamRead, port, dst, tok)
			wait = runStreamEnd(t, path, args, env)
			c = dialRetry(t, port)
			_, _ = io.WriteString(c, strings.Repeat("f", len(tok))+"\n")
			if got, _ := io.ReadAll(c); len(got) != 0 {
				t.Fatalf("a wrong token got %d bytes", len(got))
			}
			c.Close()
			if e.name == "busybox nc" {
				if _, err := wait(); err == nil {
					t.Fatal("busybox end exited 0 after a wrong token")
				}
				wait = runStreamEnd(t, path, args, env)
			}
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
