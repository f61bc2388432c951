package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/network/relay"
	"github.com/spf13/cobra"
)

// localOnly marks commands that never talk to another host's daemon
// (contexts, dial-stdio): they skip choosing a target, so a broken
// current context can still be fixed.
const localOnly = "labvm/local-only"

func isLocalOnly(cmd *cobra.Command) bool {
	for c := cmd; c != nil; c = c.Parent() {
		if c.Annotations[localOnly] != "" {
			return true
		}
	}
	return false
}

// localSocket is this host's socket: --socket, LABVM_SOCKET or the
// default.
func (a *app) localSocket() string {
	if a.socket == "" {
		return client.DefaultSocket
	}
	return a.socket
}

// resolveTarget chooses the daemon: --host (LABVM_HOST), else --context
// (LABVM_CONTEXT), else --socket (LABVM_SOCKET), else the current context,
// else this host's default socket.
func (a *app) resolveTarget() error {
	if a.host != "" {
		t, err := client.ParseSSHURL(a.host)
		if err != nil {
			return usageErrorf("--host: %v", err)
		}
		if a.socketSet {
			t.Socket = a.socket
		}
		return a.setRemote(t)
	}
	name := a.context
	if name == "" && (a.socketSet || os.Getenv("LABVM_SOCKET") != "") {
		return nil
	}
	path, err := contextsPath()
	if err != nil {
		if name == "" {
			return nil // no config dir: no current context either
		}
		return err
	}
	f, err := readContexts(path)
	if err != nil {
		return err
	}
	explicit := name != ""
	if name == "" {
		name = f.Current
	}
	if name == "" || name == defaultContext {
		return nil
	}
	c, ok := f.find(name)
	if !ok {
		if explicit {
			return unknownContext(name)
		}
		return fmt.Errorf("the current context %s is not in %s; choose one with `labvm context use NAME` (`default` for this host)", name, path)
	}
	t, err := client.ParseSSHURL(c.Host)
	if err != nil {
		return fmt.Errorf("context %s: %w", name, err)
	}
	t.Socket = c.Socket
	return a.setRemote(t)
}

func (a *app) setRemote(t client.SSHTarget) error {
	if _, err := client.NewSSH(t); err != nil {
		return usageErrorf("%v", err)
	}
	a.remote = &t
	return nil
}

// targetArgs are the global flags that make another labvm (ssh's
// ProxyCommand) talk to the same daemon as this one.
func (a *app) targetArgs() []string {
	if a.remote != nil {
		args := []string{"--host", a.remote.URL()}
		if a.remote.Socket != "" {
			args = append(args, "--socket", a.remote.Socket)
		}
		return args
	}
	return []string{"--socket", a.localSocket()}
}

// targetName names the daemon in output: its socket, or its ssh URL.
func (a *app) targetName() string {
	if a.remote != nil {
		return a.remote.String()
	}
	return a.localSocket()
}

func newDialStdioCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "dial-stdio",
		Short: "Join standard input and output to this host's labvmd (run by ssh for --host)",
		Long: `Connect standard input and output to this host's labvmd socket, as the
user running it. ` + "`labvm --host ssh://HOST`" + ` and contexts run it on the far
host through ssh; it is not meant to be run by hand. It always uses the
local socket (--socket or LABVM_SOCKET), never a context.`,
		Example:     "  ssh node3 labvm dial-stdio",
		Hidden:      true,
		Args:        cobra.NoArgs,
		Annotations: map[string]string{localOnly: "yes"},
		RunE: func(cmd *cobra.Command, args []string) error {
			c := client.New(a.localSocket())
			var d net.Dialer
			conn, err := d.DialContext(cmd.Context(), "unix", a.localSocket())
			if err != nil {
				return c.DialError(err)
			}
			return dialStdio(cmd.Context(), conn, a.stdin, a.stdout)
		},
	}
}

// dialStdio copies in to conn and conn to out, the model of docker's
// dial-stdio: end of input half-closes conn, so the daemon sees the
// client finish; when the daemon ends the stream it returns at once,
// without waiting for input to end (ssh's stdin may stay open).
func dialStdio(ctx context.Context, conn net.Conn, in io.Reader, out io.Writer) error {
	defer conn.Close()
	up := make(chan error, 1)
	down := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, in)
		if cerr := relay.CloseWrite(conn); err == nil {
			err = cerr
		}
		up <- err
	}()
	go func() {
		_, err := io.Copy(out, conn)
		if c, ok := out.(io.Closer); ok {
			_ = c.Close()
		}
		down <- err
	}()
	var err error
	select {
	case err = <-up:
		if err == nil {
			err = <-down
		}
	case err = <-down:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
