package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/vm"
)

// tunnelProtocol is the Upgrade token of tunnel and console connections:
// after the 101 the connection carries the guest's bytes, nothing else.
const tunnelProtocol = "labvm-tunnel"

// guestDialTimeout bounds connecting to a guest port: a guest that neither
// accepts nor refuses is as good as down for someone waiting at a prompt.
const guestDialTimeout = 10 * time.Second

// consoleOpener is the optional hypervisor capability behind the console.
// It is not part of Hypervisor so the daemon's fakes need not carry bytes.
type consoleOpener interface {
	OpenConsole(ctx context.Context, name string) (io.ReadWriteCloser, error)
}

var _ consoleOpener = (*vm.Libvirt)(nil)

// guestDialer connects to guests. The mark set by network.DialerControl is
// what the host firewall lets through to guests, so only the daemon, not
// any local user, reaches their ports.
func guestDialer() *net.Dialer {
	return &net.Dialer{Timeout: guestDialTimeout, Control: network.DialerControl}
}

// tunnelInstance connects the caller to a TCP port of their instance.
func (d *Daemon) tunnelInstance(w http.ResponseWriter, r *http.Request, c Caller) error {
	const action = "computes/applicationaccess/action:tunnel"
	target := r.PathValue("name")
	guest, err := d.openTunnel(r, c)
	d.audit(c, action, target, "", err)
	if err != nil {
		return err
	}
	return d.relay(w, r, c, action, target, guest)
}

// openTunnel checks everything a tunnel needs and dials the guest port,
// so every refusal is still an ordinary JSON error.
func (d *Daemon) openTunnel(r *http.Request, c Caller) (net.Conn, error) {
	inst, err := d.accessibleInstance(r, c)
	if err != nil {
		return nil, err
	}
	port, err := parsePort(r.URL.Query().Get("port"))
	if err != nil {
		return nil, err
	}
	if port == 22 && len(inst.SSHAuthorizedKeys) == 0 {
		return nil, &api.Error{Code: api.CodeConflict,
			Message: fmt.Sprintf("SSH is off on %s: it was created without --ssh-key, and SSH can only be enabled when an instance is created", inst.Name),
			Hint:    fmt.Sprintf("create a new instance with a key: labvm create NAME … --ssh-key ~/.ssh/id_ed25519.pub; `labvm exec %s -- COMMAND` works without SSH", inst.Name)}
	}
	if !inst.IP.IsValid() {
		return nil, fmt.Errorf("tunnel to %s: no address recorded for it", inst.Name)
	}
	addr := net.JoinHostPort(inst.IP.String(), strconv.Itoa(port))
	ctx, cancel := context.WithTimeout(r.Context(), guestDialTimeout)
	defer cancel()
	conn, err := guestDialer().DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &api.Error{Code: api.CodeUnavailable,
			Message: fmt.Sprintf("cannot reach port %d of %s: %v", port, inst.Name, err),
			Hint: fmt.Sprintf("is anything listening on port %d in the guest? a service of an instance that just started may need a few more seconds; check with `labvm exec %s -- netstat -ltn`",
				port, inst.Name)}
	}
	return conn, nil
}

// consoleInstance connects the caller to their instance's serial console.
func (d *Daemon) consoleInstance(w http.ResponseWriter, r *http.Request, c Caller) error {
	const action = "computes/applicationaccess/action:console"
	target := r.PathValue("name")
	console, err := d.openConsole(r, c)
	d.audit(c, action, target, "", err)
	if err != nil {
		return err
	}
	return d.relay(w, r, c, action, target, console)
}

func (d *Daemon) openConsole(r *http.Request, c Caller) (io.ReadWriteCloser, error) {
	inst, err := d.accessibleInstance(r, c)
	if err != nil {
		return nil, err
	}
	opener, ok := d.hv.(consoleOpener)
	if !ok {
		return nil, api.Errorf(api.CodeUnavailable, "this daemon's hypervisor has no console access")
	}
	console, err := opener.OpenConsole(r.Context(), inst.Domain)
	if err != nil {
		return nil, fmt.Errorf("console of %s: %w", inst.Name, err)
	}
	return console, nil
}

// accessibleInstance is the checks shared by tunnels and the console: an
// upgrade request, by the instance's own user, on a Running instance.
func (d *Daemon) accessibleInstance(r *http.Request, c Caller) (vm.Instance, error) {
	if !isUpgrade(r) {
		return vm.Instance{}, &api.Error{Code: api.CodeInvalidArgument,
			Message: fmt.Sprintf("%s needs an HTTP upgrade (Connection: Upgrade, Upgrade: %s)", r.URL.Path, tunnelProtocol),
			Hint:    "use `labvm tunnel`, `labvm forward`, `labvm ssh` or `labvm console`"}
	}
	inst, err := d.instanceByName(r.PathValue("name"))
	if err != nil {
		return inst, err
	}
	if err := d.authorizeInstance(c, PermAppAccess, inst); err != nil {
		return inst, err
	}
	if err := inst.State.Check(vm.ActionAccess); err != nil {
		return inst, fmt.Errorf("%s: %w", inst.Name, err)
	}
	return inst, nil
}

func isUpgrade(r *http.Request) bool {
	connUpgrade := false
	for _, v := range r.Header.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			connUpgrade = connUpgrade || strings.EqualFold(strings.TrimSpace(tok), "upgrade")
		}
	}
	return connUpgrade && strings.EqualFold(r.Header.Get("Upgrade"), tunnelProtocol)
}

// parsePort reads a TCP port number, 1-65535.
func parsePort(s string) (int, error) {
	if s == "" {
		return 0, invalidf("port is required: ?port=N with N from 1 to 65535")
	}
	port, err := strconv.Atoi(s)
	if err != nil || port < 1 || port > 65535 {
		return 0, invalidf("port %q: want a number from 1 to 65535", s)
	}
	return port, nil
}

// relay answers 101, takes over the connection and copies bytes between
// it and guest until either side is done or the daemon stops. It owns
// guest from here on. The http.Server forgets hijacked connections, so
// the daemon's work group holds the session and Run waits for it.
func (d *Daemon) relay(w http.ResponseWriter, r *http.Request, c Caller, action, target string, guest io.ReadWriteCloser) error {
	client, buffered, err := http.NewResponseController(w).Hijack()
	if err != nil {
		guest.Close()
		return fmt.Errorf("take over the connection: %w", err)
	}
	defer client.Close()
	// The server's header deadline must not cut a session that lasts hours.
	_ = client.SetDeadline(time.Time{})
	if _, err := io.WriteString(client, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+tunnelProtocol+"\r\n\r\n"); err != nil {
		guest.Close()
		d.log.Info("tunnel client left before the upgrade", "action", action, "target", target, "caller", c.Name, "error", err)
		return nil
	}
	d.work.Add(1)
	defer d.work.Done()
	start := time.Now()
	// Bytes the client sent right behind its request sit in the server's
	// buffer, not in the socket.
	from := io.MultiReader(io.LimitReader(buffered.Reader, int64(buffered.Reader.Buffered())), client)
	splice(r.Context(), readWriteCloser{Reader: from, WriteCloser: client}, guest)
	d.log.Info("tunnel closed", "action", action, "target", target, "caller", c.Name, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// readWriteCloser joins a reader to a connection's write side and keeps
// its half-close.
type readWriteCloser struct {
	io.Reader
	io.WriteCloser
}

func (rw readWriteCloser) CloseWrite() error { return closeWrite(rw.WriteCloser) }

// closeWrite half-closes c when it can, so the peer reads EOF while the
// other direction keeps flowing: what lets `ssh` and `nc` exit cleanly.
// Streams without a half-close (the console) are closed outright.
func closeWrite(c io.Closer) error {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Close()
}

// splice copies a→b and b→a. A direction that reaches EOF half-closes its
// destination; splice returns when both are done, when one fails, or when
// ctx ends, and closes both on the way out.
func splice(ctx context.Context, a, b io.ReadWriteCloser) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	copyHalf := func(dst, src io.ReadWriteCloser) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		if err != nil && !errors.Is(err, net.ErrClosed) {
			cancel() // a broken direction ends the whole session
			return
		}
		if closeWrite(dst) != nil {
			cancel()
		}
	}
	wg.Add(2)
	go copyHalf(b, a)
	go copyHalf(a, b)
	bothDone := make(chan struct{})
	go func() { wg.Wait(); close(bothDone) }()
	select {
	case <-bothDone:
	case <-ctx.Done():
	}
	// Closing unblocks any copy still waiting, so none outlives splice.
	a.Close()
	b.Close()
	<-bothDone
}
