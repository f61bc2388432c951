package vm

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrUnknownPID means the guest agent has no record of a process: it was
// never started by this agent, its status was already collected, or the
// guest (or its agent) restarted since.
var ErrUnknownPID = errors.New("guest agent does not know the process")

// ProcessStatus is how a guest process started with StartProcess is doing.
type ProcessStatus struct {
	Exited   bool
	ExitCode int
	// Signal killed the process, 0 when it exited by itself.
	Signal int
}

// StartProcess starts req in the guest and returns its pid at once,
// without capturing output: the process writes where req tells it to.
// The agent keeps the exit status until ProcessStatus reads it.
func (l *Libvirt) StartProcess(ctx context.Context, name string, req ExecRequest) (int, error) {
	pid, err := startProcess(ctx, l.agent(name), req)
	if err != nil {
		return 0, fmt.Errorf("start %s in %s: %w", req.Path, name, err)
	}
	return pid, nil
}

// ProcessStatus asks the agent about a process StartProcess started. Once
// it reports the process exited, the agent forgets it: a second call
// fails with ErrUnknownPID.
func (l *Libvirt) ProcessStatus(ctx context.Context, name string, pid int) (ProcessStatus, error) {
	st, err := processStatus(ctx, l.agent(name), pid)
	if err != nil {
		return st, fmt.Errorf("status of pid %d in %s: %w", pid, name, err)
	}
	return st, nil
}

func startProcess(ctx context.Context, call agentCall, req ExecRequest) (int, error) {
	if req.Path == "" {
		return 0, errors.New("empty path")
	}
	cmd, err := encodeAgentCommand("guest-exec", guestExecArgs{
		Path: req.Path, Args: req.Args, Env: req.Env, InputData: req.Input,
	})
	if err != nil {
		return 0, err
	}
	// Not idempotent: resending after a dropped connection could start
	// the job twice.
	reply, err := call(ctx, cmd, false)
	if err != nil {
		return 0, fmt.Errorf("guest-exec: %w", err)
	}
	started, err := decodeAgentReply[guestExecReturn](reply)
	if err != nil {
		return 0, fmt.Errorf("guest-exec: %w", err)
	}
	if started.PID <= 0 {
		return 0, fmt.Errorf("guest-exec: agent returned pid %d", started.PID)
	}
	return started.PID, nil
}

func processStatus(ctx context.Context, call agentCall, pid int) (ProcessStatus, error) {
	cmd, err := encodeAgentCommand("guest-exec-status", guestExecStatusArgs{PID: pid})
	if err != nil {
		return ProcessStatus{}, err
	}
	reply, err := call(ctx, cmd, true)
	if err == nil {
		var st guestExecStatus
		if st, err = decodeAgentReply[guestExecStatus](reply); err == nil {
			return ProcessStatus{Exited: st.Exited, ExitCode: st.ExitCode, Signal: st.Signal}, nil
		}
	}
	// qemu-ga answers an unknown pid with GenericError "Invalid parameter
	// 'pid'"; libvirt passes the description on in its own error.
	if strings.Contains(err.Error(), "Invalid parameter 'pid'") {
		return ProcessStatus{}, fmt.Errorf("guest-exec-status pid %d: %w: %w", pid, ErrUnknownPID, err)
	}
	return ProcessStatus{}, fmt.Errorf("guest-exec-status pid %d: %w", pid, err)
}
