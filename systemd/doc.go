// Package systemd owns labvmd's side of running under systemd, through
// github.com/coreos/go-systemd/v22: sd_notify(3) (READY, STATUS, STOPPING,
// WATCHDOG) and the watchdog period (package daemon), socket-activated
// listeners (package activation), a logind "delay" inhibitor that turns a
// host shutdown into a clean stop of the instances (package login1),
// structured journal fields for labvmd's log (package journal), and the
// unit files labvmd.service, labvmd.socket and labvm-guests.service,
// embedded so an installer can write them.
//
// Everything here is a no-op off systemd: without NOTIFY_SOCKET the
// notifier sends nothing and returns nil, without LISTEN_FDS meant for
// this process there are no listeners (the daemon binds its own socket),
// without logind there is no inhibitor (logged once), and off the journal
// the log stays text on stderr. The daemon therefore calls the same code
// whether it runs from a unit, a shell or a test.
//
// The process environment is read in one place, FromEnvironment, which
// the daemon's main calls once at start and whose results it hands down;
// go-systemd's readers are called there and nowhere else, with
// unsetEnvironment so children inherit neither the watchdog nor the
// passed sockets (see FromEnvironment for NOTIFY_SOCKET).
package systemd
