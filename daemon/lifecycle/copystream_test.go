package lifecycle

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labvm/labvm/test/hostreq"
	"github.com/labvm/labvm/vm"
	"github.com/labvm/labvm/vm/guest"
)

// localGuest is a "guest" on this host's loopback: Exec runs the copy's
// guest end here, with PATH set to bin (busybox applets only, like the
// test image, or the host's own for python3), and starts a rival on the
// port it is told: from 127.0.0.2, it connects as soon as the port
// listens, sends nothing and holds on, three times.
type localGuest struct {
	Hypervisor
	bin     string
	reached atomic.Int32
	rivals  sync.WaitGroup
	stop    chan struct{}
}

func (g *localGuest) Exec(ctx context.Context, name string, req vm.ExecRequest) (vm.ExecResult, error) {
	env := []string{}
	for _, kv := range req.Env {
		if strings.HasPrefix(kv, "PATH=") && g.bin != "" {
			kv = "PATH=" + g.bin
		}
		env = append(env, kv)
	}
	port := req.Args[4]
	g.rivals.Add(1)
	go g.rival(port)
	cmd := exec.CommandContext(ctx, req.Path, req.Args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := vm.ExecResult{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.ExitCode = ee.ExitCode()
		err = nil
	}
	return res, err
}

func (g *localGuest) rival(port string) {
	defer g.rivals.Done()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: time.Second}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for len(held) < 3 && time.Now().Before(deadline) {
		c, err := d.Dial("tcp", "127.0.0.1:"+port)
		if err != nil {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		held = append(held, c)
		g.reached.Add(1)
	}
	<-g.stop
}

// TestCopyStreamPastARival runs openStream against the real guest ends
// with a rival from another address that reaches the port before the
// daemon and stalls: the copy still arrives whole, and the busybox end's
// refusals are logged.
func TestCopyStreamPastARival(t *testing.T) {
	hostreq.Require(t, os.Geteuid() == 0, "the daemon's dialer marks its sockets (SO_MARK), which needs CAP_NET_ADMIN")
	payload := make([]byte, 2<<20+5)
	_, _ = rand.Read(payload)
	src := filepath.Join(t.TempDir(), "src.bin")
	if err := os.WriteFile(src, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	busyboxBin := t.TempDir()
	bb := hostreq.RequireTool(t, "busybox", "busybox-static")
	for _, applet := range []string{"busybox", "sh", "awk", "readlink", "date", "cat", "tar", "grep"} {
		if err := os.Symlink(bb, filepath.Join(busyboxBin, applet)); err != nil {
			t.Fatal(err)
		}
	}
	ends := []struct{ name, bin string }{{"busybox nc", busyboxBin}}
	if _, err := exec.LookPath("python3"); err == nil {
		ends = append(ends, struct{ name, bin string }{"python3", ""})
	}
	for _, end := range ends {
		t.Run(end.name, func(t *testing.T) {
			g := &localGuest{bin: end.bin, stop: make(chan struct{})}
			var logs bytes.Buffer
			e := New(Config{}, Deps{Hypervisor: g, Log: slog.New(slog.NewTextHandler(&logs, nil))})
			loop := netip.MustParseAddr("127.0.0.1")
			c := &copyCtx{e: e, inst: vm.Instance{Name: "local", Domain: "labvm-local", IP: loop, Gateway: loop}}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			ge, err := c.openStream(ctx, guest.StreamRead, src)
			if err != nil {
				close(g.stop)
				t.Fatalf("open the stream past a rival: %v", err)
			}
			var got bytes.Buffer
			n, err := ge.receive(&got)
			close(g.stop)
			g.rivals.Wait()
			if err != nil || n != int64(len(payload)) || !bytes.Equal(got.Bytes(), payload) {
				t.Fatalf("copy past a rival: %d of %d bytes, %v", n, len(payload), err)
			}
			if g.reached.Load() == 0 {
				t.Fatal("the rival never connected: the race was not run")
			}
			if end.name == "busybox nc" && !strings.Contains(logs.String(), "refused connections") {
				t.Fatalf("the busybox end's refusals are not logged:\n%s", logs.String())
			}
			t.Logf("the rival connected %d times; daemon log:\n%s", g.reached.Load(), logs.String())
		})
	}
}
