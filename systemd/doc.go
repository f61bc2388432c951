// Package systemd owns labvmd's side of running under systemd: the
// sd_notify(3) client (READY, STATUS, STOPPING, WATCHDOG), the intake of
// socket-activated listeners (sd_listen_fds(3)), and the unit files
// labvmd.service and labvmd.socket, embedded so an installer can write them.
//
// Everything here is a no-op off systemd: without NOTIFY_SOCKET the
// notifier sends nothing and returns nil, and without LISTEN_FDS meant for
// this process there are no listeners, so the daemon binds its own socket.
// The daemon therefore calls the same code whether it runs from a unit, a
// shell or a test.
//
// The process environment is read in exactly one place, FromEnvironment,
// which the daemon's main calls once at start. It also unsets the variables,
// so a child (qemu-img) cannot mistake itself for the activated service or
// talk to systemd on the daemon's behalf; the passed descriptors themselves
// are made close-on-exec when they are taken.
//
// The protocol code is written here rather than taken from
// github.com/coreos/go-systemd/v22: its daemon.SdNotify, SdWatchdogEnabled
// and activation.Files each read (and some unset) the environment on every
// call and compare against os.Getpid() internally, which would scatter
// os.Getenv through the daemon and make the pid checks testable only by
// mutating the test process's environment. Both protocols are a few dozen
// lines; owning them also lets STATUS lines be sanitised and the send be
// bounded by a deadline.
package systemd
