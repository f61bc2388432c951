package systemd

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// The variables systemd sets for a service (systemd.exec(5),
// sd_notify(3), sd_listen_fds(3)).
const (
	envNotifySocket  = "NOTIFY_SOCKET"
	envWatchdogUSec  = "WATCHDOG_USEC"
	envWatchdogPID   = "WATCHDOG_PID"
	envListenPID     = "LISTEN_PID"
	envListenFDs     = "LISTEN_FDS"
	envListenFDNames = "LISTEN_FDNAMES"
)

// FromEnvironment reads what systemd handed this process, once, and unsets
// those variables so that child processes inherit none of it. It is the
// only function in this package that touches the environment; the daemon's
// main calls it first thing.
//
// Off systemd both results are inert: the Notifier sends nothing and the
// Activation has no listeners. If a variable is malformed the error says
// which, and the results are still usable with that part disabled, so the
// caller may log the error and carry on.
func FromEnvironment() (*Notifier, *Activation, error) {
	n, a, err := fromEnv(os.Getenv, os.Getpid())
	for _, k := range []string{envNotifySocket, envWatchdogUSec, envWatchdogPID, envListenPID, envListenFDs, envListenFDNames} {
		// Unsetenv only fails for an invalid name, and these are constants.
		_ = os.Unsetenv(k)
	}
	return n, a, err
}

// fromEnv is FromEnvironment without side effects: getenv and our pid are
// parameters so tests can cover the pid checks with a table.
func fromEnv(getenv func(string) string, pid int) (*Notifier, *Activation, error) {
	n := NewNotifier(getenv(envNotifySocket))
	wd, wdErr := parseWatchdog(getenv(envWatchdogUSec), getenv(envWatchdogPID), pid)
	n.watchdog = wd
	a, actErr := parseActivation(getenv(envListenPID), getenv(envListenFDs), getenv(envListenFDNames), pid)
	return n, a, errors.Join(wdErr, actErr)
}

// parseWatchdog returns systemd's watchdog timeout for process pid, or 0
// when there is none. WATCHDOG_PID names the process the timeout is for;
// when it is another process (e.g. we were started by a wrapper that
// inherited the variables) pinging would be pointless, so it is ignored.
func parseWatchdog(usec, wdPID string, pid int) (time.Duration, error) {
	if usec == "" {
		return 0, nil
	}
	if wdPID != "" {
		p, err := strconv.Atoi(wdPID)
		if err != nil {
			return 0, fmt.Errorf("%s=%q: %w", envWatchdogPID, wdPID, err)
		}
		if p != pid {
			return 0, nil
		}
	}
	u, err := strconv.ParseUint(usec, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: %w", envWatchdogUSec, usec, err)
	}
	if u == 0 || u > uint64(time.Duration(1<<63-1)/time.Microsecond) {
		return 0, fmt.Errorf("%s=%q: out of range", envWatchdogUSec, usec)
	}
	return time.Duration(u) * time.Microsecond, nil
}

// parseActivation reads the socket-activation variables for process pid.
// Descriptors meant for another process are not ours to touch: that process
// may still own them, so the Activation is empty.
func parseActivation(listenPID, listenFDs, names string, pid int) (*Activation, error) {
	if listenPID == "" || listenFDs == "" {
		return &Activation{}, nil
	}
	p, err := strconv.Atoi(listenPID)
	if err != nil {
		return &Activation{}, fmt.Errorf("%s=%q: %w", envListenPID, listenPID, err)
	}
	if p != pid {
		return &Activation{}, nil
	}
	n, err := strconv.Atoi(listenFDs)
	if err != nil || n < 0 {
		return &Activation{}, fmt.Errorf("%s=%q: not a descriptor count", envListenFDs, listenFDs)
	}
	a := &Activation{count: n, names: make([]string, n)}
	if names == "" {
		// systemd before v227 sent no names; sd_listen_fds_with_names(3)
		// calls such descriptors "unknown".
		for i := range a.names {
			a.names[i] = "unknown"
		}
		return a, nil
	}
	split := strings.Split(names, ":")
	if len(split) != n {
		return &Activation{}, fmt.Errorf("%s has %d names for %s=%d", envListenFDNames, len(split), envListenFDs, n)
	}
	copy(a.names, split)
	return a, nil
}
