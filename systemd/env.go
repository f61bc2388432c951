package systemd

import (
	"fmt"
	"os"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"
)

// envNotifySocket is where systemd tells a Type=notify service to send
// its state (sd_notify(3)).
const envNotifySocket = "NOTIFY_SOCKET"

// FromEnvironment reads what systemd handed this process, once, through
// go-systemd, and returns it as values the daemon passes down: a Notifier
// (whether to notify at all, and the watchdog period) and an Activation
// (the passed sockets). The daemon's main calls it first thing, before any
// goroutine or child process starts; nothing else in labvmd reads these
// variables.
//
// WATCHDOG_USEC/WATCHDOG_PID and LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES are
// unset as they are read, so a child (qemu-img) cannot mistake itself for
// the activated service or the watched one; the passed descriptors are
// made close-on-exec as they are taken. NOTIFY_SOCKET stays: go-systemd's
// SdNotify reads it at each send. A child could only send to it, and the
// unit's NotifyAccess=main makes systemd ignore anything but labvmd's own
// messages.
//
// Off systemd both results are inert: the Notifier sends nothing and the
// Activation has no listeners. If a variable is malformed the error says
// which, and the results are still usable with that part disabled, so the
// caller may log the error and carry on.
func FromEnvironment() (*Notifier, *Activation, error) {
	n := &Notifier{enabled: os.Getenv(envNotifySocket) != ""}
	wd, err := sddaemon.SdWatchdogEnabled(true)
	if err != nil {
		err = fmt.Errorf("systemd watchdog: %w", err)
	} else if n.enabled {
		n.watchdog = wd
	}
	a := &Activation{files: activation.Files(true)}
	return n, a, err
}
