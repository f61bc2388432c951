package client

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// commandConn is a net.Conn over a child process's standard input and
// output: the ssh process that carries one connection to a far labvmd
// (the model of docker's cli/connhelper/commandconn). Writing is the
// child's stdin, reading its stdout; CloseWrite closes its stdin, which
// ssh passes on as end of input, so tunnels keep their half-close. The
// process is started with its own pipes (not exec's), so it can be
// waited for while a read is in flight; Close ends it.
type commandConn struct {
	target string
	cmd    *exec.Cmd
	stdin  *os.File // our end of the child's stdin
	stdout *os.File // our end of the child's stdout
	stderr *tailBuffer

	exited  chan struct{} // closed once cmd.Wait returned
	waitErr error         // cmd.Wait's result, set before exited is closed

	closeOnce sync.Once
	closing   chan struct{} // closed when Close begins
}

// exitGrace is how long Close lets the child end by itself after its
// input was closed, and then after SIGTERM, before it is killed.
const exitGrace = 2 * time.Second

// startCommandConn runs path with args and returns the connection over
// its stdio. ctx bounds only the start: the process lives as long as
// the connection (an HTTP client keeps idle connections after the
// request that opened them).
func startCommandConn(ctx context.Context, target, path string, args []string) (_ net.Conn, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	c := &commandConn{
		target:  target,
		cmd:     exec.Command(path, args...),
		stdin:   inW,
		stdout:  outR,
		stderr:  &tailBuffer{max: 4096},
		exited:  make(chan struct{}),
		closing: make(chan struct{}),
	}
	c.cmd.Stdin, c.cmd.Stdout, c.cmd.Stderr = inR, outW, c.stderr
	// Its own session: Ctrl-C on labvm's terminal is labvm's to handle
	// (it closes the connection), and ssh cannot stop on a prompt nobody
	// sees. It dies with labvm.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	// Once ssh exits, whatever it left holding its stderr (a ProxyCommand)
	// gets a moment, not forever.
	c.cmd.WaitDelay = exitGrace
	err = c.cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// failure is the process's exit as an error once it ended, within wait;
// nil while it runs or when it exited 0.
func (c *commandConn) failure(wait time.Duration) error {
	select {
	case <-c.exited:
	case <-time.After(wait):
		return nil
	}
	if c.waitErr == nil {
		return nil
	}
	return &RemoteError{Target: c.target, Err: c.waitErr, Stderr: c.stderr.String()}
}

func (c *commandConn) isClosing() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

// Read reads the child's output. At its end, a child that failed turns
// the end into its error (with what it printed on stderr).
func (c *commandConn) Read(p []byte) (int, error) {
	n, err := c.stdout.Read(p)
	if err == nil || c.isClosing() {
		return n, err
	}
	if f := c.failure(10 * time.Second); f != nil {
		return n, f
	}
	return n, err
}

// Write writes to the child's input; a write into a child that has
// failed returns its error.
func (c *commandConn) Write(p []byte) (int, error) {
	n, err := c.stdin.Write(p)
	if err == nil || c.isClosing() {
		return n, err
	}
	if f := c.failure(10 * time.Second); f != nil {
		return n, f
	}
	return n, err
}

// CloseWrite closes the child's input: ssh sends end of input to the far
// labvm, which half-closes its connection to labvmd.
func (c *commandConn) CloseWrite() error {
	if err := c.stdin.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}

// Close closes both pipes and ends the child: it gets exitGrace to leave
// on its own (end of input), then SIGTERM, then SIGKILL. It returns once
// the child is gone, so no ssh outlives its connection.
func (c *commandConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closing)
		_ = c.stdin.Close()
		_ = c.stdout.Close()
		for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGKILL} {
			select {
			case <-c.exited:
				return
			case <-time.After(exitGrace):
			}
			_ = c.cmd.Process.Signal(sig)
		}
		<-c.exited
	})
	return nil
}

func (c *commandConn) LocalAddr() net.Addr  { return commandAddr("labvm") }
func (c *commandConn) RemoteAddr() net.Addr { return commandAddr(c.target) }

// Deadlines are the pipes' own (our ends of os.Pipe are in the runtime
// poller).
func (c *commandConn) SetDeadline(t time.Time) error {
	return errors.Join(c.stdout.SetReadDeadline(t), c.stdin.SetWriteDeadline(t))
}
func (c *commandConn) SetReadDeadline(t time.Time) error  { return c.stdout.SetReadDeadline(t) }
func (c *commandConn) SetWriteDeadline(t time.Time) error { return c.stdin.SetWriteDeadline(t) }

// commandAddr names the ends of a commandConn.
type commandAddr string

func (a commandAddr) Network() string { return "ssh" }
func (a commandAddr) String() string  { return string(a) }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

var _ io.ReadWriteCloser = (*commandConn)(nil)
