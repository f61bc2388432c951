package libvirt

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/labvm/labvm/vm"
)

// StartProcess starts req in the guest and returns its pid at once,
// without capturing output: the process writes where req tells it to.
// The agent keeps the exit status until vm.ProcessStatus reads it.
func (l *Driver) StartProcess(ctx context.Context, name string, req vm.ExecRequest) (int, error) {
	pid, err := startProcess(ctx, l.agent(name), req)
	if err != nil {
		return 0, fmt.Errorf("start %s in %s: %w", req.Path, name, err)
	}
	return pid, nil
}

// ProcessStatus asks the agent about a process StartProcess started. Once
// it reports the process exited, the agent forgets it: a second call
// fails with vm.ErrUnknownPID.
func (l *Driver) ProcessStatus(ctx context.Context, name string, pid int) (vm.ProcessStatus, error) {
	st, err := processStatus(ctx, l.agent(name), pid)
	if err != nil {
		return st, fmt.Errorf("status of pid %d in %s: %w", pid, name, err)
	}
	return st, nil
}

func startProcess(ctx context.Context, call agentCall, req vm.ExecRequest) (int, error) {
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

func processStatus(ctx context.Context, call agentCall, pid int) (vm.ProcessStatus, error) {
	cmd, err := encodeAgentCommand("guest-exec-status", guestExecStatusArgs{PID: pid})
	if err != nil {
		return vm.ProcessStatus{}, err
	}
	reply, err := call(ctx, cmd, true)
	if err == nil {
		var st guestExecStatus
		if st, err = decodeAgentReply[guestExecStatus](reply); err == nil {
			return vm.ProcessStatus{Exited: st.Exited, ExitCode: st.ExitCode, Signal: st.Signal}, nil
		}
	}
	// qemu-ga answers an unknown pid with GenericError "Invalid parameter
	// 'pid'"; libvirt passes the description on in its own error.
	if strings.Contains(err.Error(), "Invalid parameter 'pid'") {
		return vm.ProcessStatus{}, fmt.Errorf("guest-exec-status pid %d: %w: %w", pid, vm.ErrUnknownPID, err)
	}
	return vm.ProcessStatus{}, fmt.Errorf("guest-exec-status pid %d: %w", pid, err)
}
