package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/network/relay"
	"github.com/labvm/labvm/network/sameuser"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// detachKey is Ctrl-], telnet's and virsh's escape to leave a console.
const detachKey = 0x1d

func newTunnelCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "tunnel NAME PORT",
		Short: "Connect standard input and output to a TCP port of the instance",
		Long: `Connect labvm's standard input and output to a TCP port in the guest,
through labvmd: the guest's network is reachable only by the daemon. Made
for ssh's ProxyCommand (see ` + "`labvm ssh` and `labvm ssh-config`" + `). It ends when the
guest closes the connection; end of input is passed on as a half-close.`,
		Example: `  ssh -o ProxyCommand='labvm tunnel alice-dev 22' labvm@alice-dev
  printf 'GET / HTTP/1.0\r\n\r\n' | labvm tunnel alice-dev 80`,
		GroupID: "access",
		Args:    exactArgs(2, "NAME and PORT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := relay.ParsePort(args[1])
			if err != nil {
				return usageErrorf("PORT %v", err)
			}
			conn, err := a.client().Tunnel(cmd.Context(), args[0], port)
			if err != nil {
				return err
			}
			return pipeStdio(cmd.Context(), conn, a.stdin, a.stdout, func() { _ = relay.CloseWrite(conn) })
		},
	}
}

func newForwardCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "forward NAME [LOCAL:]REMOTE",
		Short: "Forward a local port to a port of the instance",
		Long: `Listen on 127.0.0.1:LOCAL and connect every connection made to it to port
REMOTE in the guest, through labvmd. Without LOCAL a free port is chosen and
printed. Only you can use the local port: connections made by another
user of this host are closed and reported. Runs until interrupted.`,
		Example: `  labvm forward alice-dev 8888:80     # http://127.0.0.1:8888 is the guest's port 80
  labvm forward alice-dev 5432         # a free local port to the guest's PostgreSQL`,
		GroupID: "access",
		Args:    exactArgs(2, "NAME and [LOCAL:]REMOTE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			local, remote, err := parseForward(args[1])
			if err != nil {
				return usageErrorf("%v; usage: %s", err, cmd.UseLine())
			}
			return a.forward(cmd.Context(), args[0], local, remote, func(port int) {
				fmt.Fprintf(a.stdout, "Forwarding 127.0.0.1:%d -> %s:%d (Ctrl-C to stop)\n", port, args[0], remote)
			})
		},
	}
}

// forward serves tunnels until ctx ends. It opens one tunnel before
// listening so a refusal (SSH off, not Running, nobody listening) shows
// now rather than at the first connection.
func (a *app) forward(ctx context.Context, name string, local, remote int, listening func(port int)) error {
	c := a.client()
	probe, err := c.Tunnel(ctx, name, remote)
	if err != nil {
		return err
	}
	probe.Close()
	// Other local users can connect to 127.0.0.1 too: only this user's
	// own connections are served, others are closed and reported.
	ln, err := sameuser.Listen(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(local)), sameuser.Options{
		Refused: func(r *sameuser.Refusal) { fmt.Fprintf(a.stderr, "labvm: %v\n", r) },
	})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("local port %d is already in use; pick another, e.g. `labvm forward %s %d:%d`, or give only %d to get a free port", local, name, local+1, remote, remote)
		}
		return fmt.Errorf("listen on 127.0.0.1:%d: %w", local, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	listening(port)

	// Closing the listener is what ends Accept when the user interrupts.
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept on 127.0.0.1:%d: %w", port, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tunnel, err := c.Tunnel(ctx, name, remote)
			if err != nil {
				// One failed connection must not end the others.
				fmt.Fprintf(a.stderr, "connection from %s: %s\n", conn.RemoteAddr(), errorText(err))
				conn.Close()
				return
			}
			relay.Splice(ctx, conn, tunnel)
		}()
	}
}

// errorText is an error as report prints it, on one line.
func errorText(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) && ae.Hint != "" {
		return ae.Message + " (" + ae.Hint + ")"
	}
	return err.Error()
}

// parseForward reads [LOCAL:]REMOTE; LOCAL 0 means any free port.
func parseForward(s string) (local, remote int, err error) {
	localStr, remoteStr, hasLocal := strings.Cut(s, ":")
	if !hasLocal {
		localStr, remoteStr = "", s
	}
	if remote, err = relay.ParsePort(remoteStr); err != nil {
		return 0, 0, fmt.Errorf("REMOTE %w", err)
	}
	if hasLocal {
		if local, err = relay.ParsePort(localStr); err != nil {
			return 0, 0, fmt.Errorf("LOCAL %w", err)
		}
	}
	return local, remote, nil
}

func newConsoleCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "console NAME",
		Short: "Attach to the instance's serial console (detach with Ctrl-])",
		Long: `Attach to the guest's serial console, the way to reach an instance whose
network or SSH is broken. On a terminal, keys go to the guest as typed;
detach with Ctrl-] (the instance keeps running). Attaching takes the console
over from any other session on the same instance.`,
		GroupID: "access",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.client().Console(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer conn.Close()
			in := a.stdin
			if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				restore, err := rawMode(f)
				if err != nil {
					return err
				}
				defer restore()
				in = &detachReader{r: f}
				fmt.Fprintf(a.stderr, "Connected to %s's console. Detach with Ctrl-]\r\n", args[0])
				defer fmt.Fprintf(a.stderr, "\r\nDetached from %s's console.\r\n", args[0])
			}
			err = pipeStdio(cmd.Context(), conn, in, a.stdout, func() { conn.Close() })
			if errors.Is(err, net.ErrClosed) {
				err = nil // detached: closing the console ended the read
			}
			return err
		},
	}
}

// rawMode passes every key to the guest (Ctrl-C included) and returns
// how to restore the terminal; the caller defers it so any exit restores.
func rawMode(f *os.File) (restore func(), err error) {
	old, err := term.MakeRaw(int(f.Fd()))
	if err != nil {
		return nil, fmt.Errorf("put the terminal in raw mode: %w", err)
	}
	return func() { _ = term.Restore(int(f.Fd()), old) }, nil
}

// detachReader ends input at the detach key, passing what came before it.
type detachReader struct {
	r        io.Reader
	detached bool
}

func (d *detachReader) Read(p []byte) (int, error) {
	if d.detached {
		return 0, io.EOF
	}
	n, err := d.r.Read(p)
	if i := bytes.IndexByte(p[:n], detachKey); i >= 0 {
		d.detached = true
		return i, nil
	}
	return n, err
}

// pipeStdio copies in→conn and conn→out. It returns when conn's side
// ends (the guest closed, or ctx ended); the end of in calls inputEnded,
// a half-close for tunnels and a detach for the console. A read of in
// blocked in its goroutine cannot be interrupted (a terminal or pipe has
// no deadline), so that goroutine ends at its next read or with the
// process, which follows at once.
func pipeStdio(ctx context.Context, conn net.Conn, in io.Reader, out io.Writer, inputEnded func()) error {
	go func() {
		_, _ = io.Copy(conn, in)
		inputEnded()
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_, err := io.Copy(out, conn)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
