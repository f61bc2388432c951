package sameuser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labvm/labvm/test/hostreq"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// dialEnv makes the test binary a client (see TestMain): it connects to
// the address in it and prints what the server sent.
const dialEnv = "SAMEUSER_TEST_DIAL"

func TestMain(m *testing.M) {
	if spec := os.Getenv(dialEnv); spec != "" {
		os.Exit(dialAndPrint(spec))
	}
	os.Exit(m.Run())
}

// dialAndPrint connects as "MODE ADDR" says (mode tcp4, tcp6 or mapped:
// an IPv6 socket reaching an IPv4 address as ::ffff:a.b.c.d), reads until
// the server closes and prints "got:DATA".
func dialAndPrint(spec string) int {
	mode, addr, _ := strings.Cut(spec, " ")
	var conn net.Conn
	var err error
	if mode == "mapped" {
		conn, err = dialMapped(addr)
	} else {
		conn, err = net.DialTimeout(mode, addr, 5*time.Second)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return 3
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // a missing deadline only risks the test timing out
	b, _ := io.ReadAll(conn)                               // a refused connection may end in a reset
	fmt.Printf("got:%s", b)
	return 0
}

// dialMapped connects an AF_INET6 socket to an IPv4 address, as dual-stack
// clients (Java's default) do; Go's net package would pick AF_INET.
func dialMapped(addr string) (net.Conn, error) {
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	sa := &unix.SockaddrInet6{Port: ap.Port}
	copy(sa.Addr[:], ap.IP.To16())
	if err := unix.Connect(fd, sa); err != nil {
		_ = unix.Close(fd) // the connect error is what matters
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "mapped")
	defer f.Close()
	return net.FileConn(f)
}

// clientBinary copies the test binary where any uid may run it.
func clientBinary(t *testing.T) string {
	t.Helper()
	hostreq.RequireTool(t, "setpriv", "util-linux")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sameuser-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// runClient runs the client as uid (gid the same) and returns what it
// received.
func runClient(t *testing.T, bin string, uid int, mode, addr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := strconv.Itoa(uid)
	cmd := exec.CommandContext(ctx, "setpriv", "--reuid="+id, "--regid="+id, "--clear-groups", bin)
	cmd.Env = []string{dialEnv + "=" + mode + " " + addr}
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("client as uid %d (%s %s): %v\n%s", uid, mode, addr, err, stderr)
	}
	got, ok := strings.CutPrefix(string(out), "got:")
	if !ok {
		t.Fatalf("client printed %q", out)
	}
	return got
}

// TestOnlyTheSameUserGetsThrough runs the listener in this process and a
// client as another process, under the listener's uid or another one, over
// IPv4, IPv6 and an IPv6 socket reaching IPv4.
func TestOnlyTheSameUserGetsThrough(t *testing.T) {
	// Running a client as another uid needs root.
	hostreq.RequireRoot(t)
	bin := clientBinary(t)
	// Two uids no account should use: the kernel needs no passwd entry.
	other := 61000 + os.Getpid()%1000
	stranger := other + 1000
	tests := []struct {
		name       string
		listen     string // address for Listen
		mode       string // client's dial mode
		serves     int    // the listener's uid
		clientUID  int
		wantServed bool
	}{
		{"IPv4, same uid (root)", "127.0.0.1:0", "tcp4", 0, 0, true},
		{"IPv4, another uid", "127.0.0.1:0", "tcp4", 0, other, false},
		{"IPv6, same uid (root)", "[::1]:0", "tcp6", 0, 0, true},
		{"IPv6, another uid", "[::1]:0", "tcp6", 0, other, false},
		{"IPv6 socket to IPv4, same uid", "127.0.0.1:0", "mapped", 0, 0, true},
		{"IPv6 socket to IPv4, another uid", "127.0.0.1:0", "mapped", 0, other, false},
		{"an ordinary user's listener serves that user", "127.0.0.1:0", "tcp4", other, other, true},
		{"an ordinary user's listener refuses root", "127.0.0.1:0", "tcp4", other, 0, false},
		{"an ordinary user's listener refuses another user", "[::1]:0", "tcp6", other, stranger, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			refusals := make(chan *Refusal, 1)
			ln, err := Listen(context.Background(), "tcp", tt.listen, Options{Refused: func(r *Refusal) { refusals <- r }})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ln.uid = uint32(tt.serves)
			served := make(chan struct{}, 1)
			go func() {
				for {
					conn, err := ln.Accept()
					if err != nil {
						return
					}
					_, _ = io.WriteString(conn, "welcome") // the client checks what arrived
					conn.Close()
					served <- struct{}{}
				}
			}()
			got := runClient(t, bin, tt.clientUID, tt.mode, ln.Addr().String())
			if tt.wantServed {
				if got != "welcome" {
					t.Fatalf("client as uid %d got %q, want welcome", tt.clientUID, got)
				}
				select {
				case r := <-refusals:
					t.Fatalf("refused: %v", r)
				default:
				}
				return
			}
			if got != "" {
				t.Fatalf("client as uid %d got %q, want nothing", tt.clientUID, got)
			}
			select {
			case r := <-refusals:
				if !r.Known || r.UID != uint32(tt.clientUID) || r.Want != uint32(tt.serves) {
					t.Fatalf("refusal %+v: want uid %d known, serving %d", r, tt.clientUID, tt.serves)
				}
				if !strings.Contains(r.Error(), "uid "+strconv.Itoa(tt.clientUID)) {
					t.Fatalf("refusal text %q does not name uid %d", r.Error(), tt.clientUID)
				}
			case <-served:
				t.Fatal("served the connection, want it refused")
			case <-time.After(10 * time.Second):
				t.Fatal("no refusal reported")
			}
		})
	}
}

// TestRefusedWhenUnsure covers what the kernel's answer may leave open:
// a failed lookup and a peer socket no process holds any more both refuse.
func TestRefusedWhenUnsure(t *testing.T) {
	tests := []struct {
		name     string
		sock     *netlink.Socket
		err      error
		wantText string // "" means accepted
	}{
		{name: "same uid, open socket", sock: &netlink.Socket{UID: 1000, INode: 42}},
		{name: "another uid", sock: &netlink.Socket{UID: 59999, INode: 42}, wantText: "belongs to uid 59999,"},
		{name: "closed peer reported as uid 0", sock: &netlink.Socket{UID: 0, INode: 0}, wantText: "already closed"},
		{name: "lookup failed", err: errors.New("netlink: permission denied"), wantText: "cannot tell which user made it (netlink: permission denied)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &Listener{uid: 1000, lookup: func(_, _ *net.TCPAddr) (*netlink.Socket, error) { return tt.sock, tt.err }}
			a, b := tcpPair(t)
			defer a.Close()
			defer b.Close()
			r := l.check(b)
			if tt.wantText == "" {
				if r != nil {
					t.Fatalf("refused: %v", r)
				}
				return
			}
			if r == nil || !strings.Contains(r.Error(), tt.wantText) {
				t.Fatalf("check = %v; want a refusal saying %q", r, tt.wantText)
			}
		})
	}
}

// tcpPair is both ends of a loopback connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return client, server
}

func TestListenRefusesNonLoopback(t *testing.T) {
	tests := []struct {
		network, address, want string
	}{
		{"tcp", "0.0.0.0:0", "not a loopback IP address"},
		{"tcp", ":0", "not a loopback IP address"},
		{"tcp", "localhost:0", "not a loopback IP address"},
		{"tcp6", "[::]:0", "not a loopback IP address"},
		{"udp", "127.0.0.1:0", "want tcp, tcp4 or tcp6"},
		{"tcp", "127.0.0.1", "missing port"},
	}
	for _, tt := range tests {
		t.Run(tt.network+" "+tt.address, func(t *testing.T) {
			ln, err := Listen(context.Background(), tt.network, tt.address, Options{})
			if err == nil {
				ln.Close()
				t.Fatalf("Listen succeeded, want an error mentioning %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Listen: %v; want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestListenKeepsAddressInUse(t *testing.T) {
	first, err := Listen(context.Background(), "tcp", "127.0.0.1:0", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, err = Listen(context.Background(), "tcp", first.Addr().String(), Options{})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second Listen on %s: %v; want EADDRINUSE", first.Addr(), err)
	}
}
