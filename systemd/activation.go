package systemd

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
)

// listenFDsStart is the first passed descriptor (SD_LISTEN_FDS_START):
// systemd passes them contiguously right after stdin, stdout and stderr.
const listenFDsStart = 3

// Activation holds the sockets systemd passed to this process
// (sd_listen_fds(3)). The zero value has none. Its descriptors are taken
// over at most once: the first call to Listeners or UnixListener wraps
// them, later calls return the same listeners.
type Activation struct {
	count int      // LISTEN_FDS, when LISTEN_PID is us
	names []string // LISTEN_FDNAMES, one per descriptor

	once      sync.Once
	listeners []net.Listener
	err       error
}

// Listeners wraps the passed descriptors, in order, as listeners. It
// returns none (and no error) when systemd passed nothing to this process.
// A descriptor that is not a listening socket is an error: the unit file
// and the daemon disagree, and guessing would serve on the wrong socket.
func (a *Activation) Listeners() ([]net.Listener, error) {
	if a == nil {
		return nil, nil
	}
	a.once.Do(func() { a.listeners, a.err = a.take() })
	return a.listeners, a.err
}

func (a *Activation) take() ([]net.Listener, error) {
	lns := make([]net.Listener, 0, a.count)
	for i := range a.count {
		fd := listenFDsStart + i
		// systemd passes the descriptors without close-on-exec. Set it
		// before anything else so a child started concurrently (qemu-img)
		// cannot inherit the API socket and keep it alive after we exit.
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), a.names[i])
		// FileListener duplicates the descriptor (close-on-exec, non-
		// blocking); the original is closed so no second copy lingers.
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("socket activation: fd %d (%s): %w", fd, a.names[i], err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// UnixListener returns the passed unix-domain listener named name in
// LISTEN_FDNAMES (FileDescriptorName=, by default the socket unit's name,
// e.g. "labvmd.socket"), or the first unix listener when name is empty.
//
// It returns (nil, nil) when systemd passed nothing: the caller then
// listens itself. The result is a net.Listener rather than a
// *net.UnixListener on purpose: a nil *net.UnixListener stored in a
// net.Listener is a non-nil interface, and a "nil means bind it yourself"
// check downstream would miss it.
func (a *Activation) UnixListener(name string) (net.Listener, error) {
	lns, err := a.Listeners()
	if err != nil || len(lns) == 0 {
		return nil, err
	}
	for i, ln := range lns {
		if _, ok := ln.(*net.UnixListener); ok && (name == "" || a.names[i] == name) {
			return ln, nil
		}
	}
	want := "a unix socket"
	if name != "" {
		want = fmt.Sprintf("a unix socket named %q", name)
	}
	return nil, fmt.Errorf("socket activation: systemd passed %s but not %s", strings.Join(a.names, ", "), want)
}
