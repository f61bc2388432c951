package vm

import (
	"errors"
	"fmt"
)

var (
	// ErrUnavailable means libvirtd cannot be reached, even after one
	// reconnect attempt.
	ErrUnavailable = errors.New("libvirt unavailable")
	// ErrDomainNotFound means no domain of that name exists.
	ErrDomainNotFound = errors.New("domain not found")
	// ErrDomainExists means a domain of that name is already running.
	ErrDomainExists = errors.New("domain already exists")
	// ErrAgentUnavailable means the guest agent is not connected or not
	// responding, typically because the guest is still booting.
	ErrAgentUnavailable = errors.New("guest agent unavailable")
	// ErrExecTimeout means a command run through the guest agent did not
	// exit before the caller's deadline. The process may still be running
	// in the guest: the agent has no way to kill it.
	ErrExecTimeout = errors.New("guest exec timed out")
)

// ErrUnknownPID means the guest agent has no record of a process: it was
// never started by this agent, its status was already collected, or the
// guest (or its agent) restarted since.
var ErrUnknownPID = errors.New("guest agent does not know the process")

// DomainStatus is the coarse run state of a libvirt domain, reduced to
// what the daemon's reconcile loop distinguishes.
type DomainStatus int

const (
	DomainAbsent DomainStatus = iota
	DomainRunning
	DomainPaused
	DomainShutoff
	DomainOther
)

func (s DomainStatus) String() string {
	switch s {
	case DomainAbsent:
		return "absent"
	case DomainRunning:
		return "running"
	case DomainPaused:
		return "paused"
	case DomainShutoff:
		return "shutoff"
	case DomainOther:
		return "other"
	}
	return fmt.Sprintf("DomainStatus(%d)", int(s))
}

// OwnedDomain is a domain carrying labvm metadata.
type OwnedDomain struct {
	Name string
	// InstanceID is empty when the metadata is present but unreadable.
	InstanceID string
	Status     DomainStatus
}

// ExecRequest is a command to run in the guest through the agent. The
// program is executed directly, without a shell.
type ExecRequest struct {
	Path string
	Args []string
	// Env entries are "KEY=value"; when set they replace the agent's
	// environment rather than extending it.
	Env []string
	// Input is written to stdin; nil leaves stdin unconnected.
	Input []byte
}

// ExecResult is how a guest command ended and what it printed.
type ExecResult struct {
	ExitCode int
	// Signal is the signal that killed the process, 0 when it exited.
	Signal int
	Stdout []byte
	Stderr []byte
	// Truncated is set when the agent dropped output beyond its capture
	// limit (16 MiB per stream in current QEMU).
	Truncated bool
}

// ProcessStatus is how a guest process started with StartProcess is doing.
type ProcessStatus struct {
	Exited   bool
	ExitCode int
	// Signal killed the process, 0 when it exited by itself.
	Signal int
}
