package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/daemontest"
)

func TestStudioArguments(t *testing.T) {
	runWithoutDaemon(t, filepath.Join(t.TempDir(), "none.sock"), []cliCase{
		{[]string{"studio", "extra"}, 2, "studio takes no arguments"},
		{[]string{"studio", "--port", "70000"}, 2, "--port 70000: use 1-65535"},
		{[]string{"studio", "--port", "-1"}, 2, "--port -1"},
		// The daemon is asked before anything listens.
		{[]string{"studio"}, 1, "labvmd is not running"},
	})
}

// syncBuffer is written by the command while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStudioServesUntilInterrupted runs `labvm studio` against a daemon:
// it prints its URL, serves the page there, says so when the port is
// taken, and ends cleanly when interrupted.
func TestStudioServesUntilInterrupted(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out, errb syncBuffer
	a := &app{stdout: &out, stderr: &errb, stdin: strings.NewReader("")}
	root := newRootCommand(a)
	root.SetArgs([]string{"--socket", td.Cfg.SocketPath, "studio"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	var url string
	for deadline := time.Now().Add(10 * time.Second); ; {
		if line, _, ok := strings.Cut(out.String(), "\n"); ok {
			rest, found := strings.CutPrefix(line, "labvm studio is at ")
			url, _, _ = strings.Cut(rest, " ")
			if !found || !strings.HasPrefix(url, "http://127.0.0.1:") {
				t.Fatalf("labvm studio printed %q", line)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("labvm studio printed nothing; stderr %q", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`<meta name="studio-token"`)) {
		t.Fatalf("GET %s = %d:\n%s", url, resp.StatusCode, body)
	}

	t.Run("a port in use is said so, with a hint", func(t *testing.T) {
		_, port, _ := net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"))
		var errb2 bytes.Buffer
		a2 := &app{stdout: io.Discard, stderr: &errb2, stdin: strings.NewReader("")}
		root2 := newRootCommand(a2)
		root2.SetArgs([]string{"--socket", td.Cfg.SocketPath, "studio", "--port", port})
		code := report(&errb2, root2.ExecuteContext(t.Context()))
		p, _ := strconv.Atoi(port)
		if code != 1 || !strings.Contains(errb2.String(), "port "+port+" on 127.0.0.1 is already in use") || !strings.Contains(errb2.String(), "--port "+strconv.Itoa(p+1)) {
			t.Fatalf("exit %d, stderr %q", code, errb2.String())
		}
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("labvm studio after Ctrl-C: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("labvm studio still running 10s after Ctrl-C")
	}
}
