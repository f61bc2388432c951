package systemd

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
)

// APISocketName is the name labvmd.socket gives its socket
// (FileDescriptorName=): with several passed sockets, the one to serve.
const APISocketName = "labvmd.socket"

// Activation holds the sockets systemd passed to this process
// (sd_listen_fds(3)), as go-systemd's activation.Files took them. The zero
// value has none. The descriptors are taken over at most once: the first
// call to Listeners or APIListener wraps them, later calls return the same
// listeners.
type Activation struct {
	files []*os.File // in order, each named from LISTEN_FDNAMES

	once      sync.Once
	listeners []net.Listener
	err       error
}

// Names returns the passed sockets' names in order (LISTEN_FDNAMES;
// "LISTEN_FD_<n>" where systemd gave none).
func (a *Activation) Names() []string {
	if a == nil {
		return nil
	}
	names := make([]string, len(a.files))
	for i, f := range a.files {
		names[i] = f.Name()
	}
	return names
}

// Listeners wraps the passed descriptors, in order, as listeners. It
// returns none (and no error) when systemd passed nothing to this process.
// A descriptor that is not a listening socket is an error: the unit file
// and the daemon disagree, and guessing would serve on the wrong socket.
//
// go-systemd's activation.Listeners would drop such a descriptor silently
// (ListenersWithNames also loses the order), so the files it hands over
// are wrapped here instead.
func (a *Activation) Listeners() ([]net.Listener, error) {
	if a == nil {
		return nil, nil
	}
	a.once.Do(func() { a.listeners, a.err = a.take() })
	return a.listeners, a.err
}

func (a *Activation) take() ([]net.Listener, error) {
	lns := make([]net.Listener, 0, len(a.files))
	var failed error
	for i, f := range a.files {
		// FileListener duplicates the descriptor (close-on-exec, non-
		// blocking); the original is closed so no second copy lingers.
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil && failed == nil {
			failed = fmt.Errorf("socket activation: passed descriptor %d (%s) is not a listening socket: %w", 3+i, f.Name(), err)
		}
		if ln != nil {
			lns = append(lns, ln)
		}
	}
	if failed != nil {
		for _, l := range lns {
			l.Close()
		}
		return nil, failed
	}
	return lns, nil
}

// APIListener returns the socket to serve the API on: the only passed
// socket, whatever its name (socket units name it after themselves, and a
// renamed or hand-written unit is still meant for us), or, when there are
// several, the one named want. Several without one named want is an error
// that lists them, once. The API socket must be a unix socket: callers are
// identified by SO_PEERCRED.
//
// It returns (nil, nil) when systemd passed nothing: the caller then
// listens itself. The result is a net.Listener rather than a
// *net.UnixListener on purpose: a nil *net.UnixListener stored in a
// net.Listener is a non-nil interface, and a "nil means bind it yourself"
// check downstream would miss it. Listeners not chosen are closed.
func (a *Activation) APIListener(want string) (net.Listener, error) {
	lns, err := a.Listeners()
	if err != nil || len(lns) == 0 {
		return nil, err
	}
	names := a.Names()
	pick := -1
	if len(lns) == 1 {
		pick = 0
	} else {
		for i, n := range names {
			if n == want {
				pick = i
				break
			}
		}
	}
	if pick < 0 {
		for _, l := range lns {
			l.Close()
		}
		return nil, fmt.Errorf("systemd passed %d sockets (%s) and none is named %s: pass only the API socket, or set FileDescriptorName=%s in its socket unit",
			len(lns), strings.Join(names, ", "), want, want)
	}
	for i, l := range lns {
		if i != pick {
			l.Close()
		}
	}
	if _, ok := lns[pick].(*net.UnixListener); !ok {
		lns[pick].Close()
		return nil, fmt.Errorf("systemd passed %s, a %s socket; the API needs a unix socket (ListenStream=/run/labvm/labvm.sock)",
			names[pick], lns[pick].Addr().Network())
	}
	return lns[pick], nil
}
