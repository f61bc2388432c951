package lifecycle

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/vm"
)

// guestDialTimeout bounds connecting to a guest port: a guest that neither
// accepts nor refuses is as good as down for someone waiting at a prompt.
const guestDialTimeout = 10 * time.Second

// ConsoleOpener is the optional hypervisor capability behind the console.
type ConsoleOpener interface {
	OpenConsole(ctx context.Context, name string) (io.ReadWriteCloser, error)
}

// guestDialer connects to guests. The mark set by network.DialerControl is
// what the host firewall lets through to guests, so only the daemon, not
// any local user, reaches their ports.
func guestDialer() *net.Dialer {
	return &net.Dialer{Timeout: guestDialTimeout, Control: network.DialerControl}
}

// CheckAccess is what every way into a guest needs: a Running instance.
func CheckAccess(inst vm.Instance) error {
	if err := inst.State.Check(vm.ActionAccess); err != nil {
		return fmt.Errorf("%s: %w", inst.Name, err)
	}
	return nil
}

// DialGuest connects to a TCP port of a Running instance, as the daemon.
func (e *Engine) DialGuest(ctx context.Context, inst vm.Instance, port int) (net.Conn, error) {
	if err := CheckAccess(inst); err != nil {
		return nil, err
	}
	if port == 22 && len(inst.SSHAuthorizedKeys) == 0 {
		return nil, errdefs.New(errdefs.ErrConflict,
			fmt.Sprintf("create a new instance with a key: labvm create NAME … --ssh-key ~/.ssh/id_ed25519.pub; `labvm exec %s -- COMMAND` works without SSH", inst.Name),
			"SSH is off on %s: it was created without --ssh-key, and SSH can only be enabled when an instance is created", inst.Name)
	}
	if !inst.IP.IsValid() {
		return nil, fmt.Errorf("tunnel to %s: no address recorded for it", inst.Name)
	}
	addr := net.JoinHostPort(inst.IP.String(), strconv.Itoa(port))
	ctx, cancel := context.WithTimeout(ctx, guestDialTimeout)
	defer cancel()
	conn, err := guestDialer().DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, errdefs.New(errdefs.ErrUnavailable,
			fmt.Sprintf("is anything listening on port %d in the guest? a service of an instance that just started may need a few more seconds; check with `labvm exec %s -- netstat -ltn`", port, inst.Name),
			"cannot reach port %d of %s: %v", port, inst.Name, err)
	}
	return conn, nil
}

// OpenConsole connects to a Running instance's serial console.
func (e *Engine) OpenConsole(ctx context.Context, inst vm.Instance) (io.ReadWriteCloser, error) {
	if err := CheckAccess(inst); err != nil {
		return nil, err
	}
	opener, ok := e.hv.(ConsoleOpener)
	if !ok {
		return nil, errdefs.New(errdefs.ErrUnavailable, "", "this daemon's hypervisor has no console access")
	}
	console, err := opener.OpenConsole(ctx, inst.Domain)
	if err != nil {
		return nil, fmt.Errorf("console of %s: %w", inst.Name, err)
	}
	return console, nil
}
