package libvirt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/labvm/labvm/vm"
	virt "libvirt.org/go/libvirt"
)

// agentCallTimeout bounds one agent round trip. Exec status polls return
// at once, so a long wait means the agent is wedged, not busy.
const agentCallTimeout = 10 * time.Second

// agentPingTimeout is short because ping is how callers probe whether the
// guest has finished booting; they retry.
const agentPingTimeout = 3 * time.Second

// Exec status polling starts fast so short commands return promptly and
// backs off so long builds do not flood the agent channel.
const (
	execPollMin = 50 * time.Millisecond
	execPollMax = time.Second
)

// agentCall sends one JSON command to the guest agent and returns the raw
// reply. It is a function so the Exec protocol can be tested without a
// guest. idempotent says whether the command may be resent after libvirtd
// dropped the connection mid-call: a status query may, starting a process
// may not, since the guest may already be running it.
type agentCall func(ctx context.Context, cmd []byte, idempotent bool) ([]byte, error)

// AgentPing succeeds once the guest agent answers.
func (l *Driver) AgentPing(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, agentPingTimeout)
	defer cancel()
	cmd, err := encodeAgentCommand("guest-ping", nil)
	if err != nil {
		return fmt.Errorf("ping agent of %s: %w", name, err)
	}
	reply, err := l.agent(name)(ctx, cmd, true)
	if err == nil {
		_, err = decodeAgentReply[struct{}](reply)
	}
	if err != nil {
		return fmt.Errorf("ping agent of %s: %w", name, err)
	}
	return nil
}

// Exec runs req in the guest and waits for it to exit. When ctx ends first
// the error wraps ctx.Err() and, for a deadline, vm.ErrExecTimeout.
func (l *Driver) Exec(ctx context.Context, name string, req vm.ExecRequest) (vm.ExecResult, error) {
	res, err := runExec(ctx, l.agent(name), req)
	if err != nil {
		return res, fmt.Errorf("exec %s in %s: %w", req.Path, name, err)
	}
	return res, nil
}

// agent binds agentCall to one domain over the shared connection.
func (l *Driver) agent(name string) agentCall {
	return func(ctx context.Context, cmd []byte, idempotent bool) ([]byte, error) {
		var reply string
		send := func(d *virt.Domain) error {
			var err error
			reply, err = d.QemuAgentCommand(string(cmd), agentTimeout(ctx), 0)
			return err
		}
		var err error
		if idempotent {
			err = l.withDomain(ctx, name, send)
		} else {
			err = l.withDomainOnce(ctx, name, send)
		}
		if err != nil {
			return nil, classifyAgentError(err)
		}
		return []byte(reply), nil
	}
}

// agentTimeout converts what is left of ctx into libvirt's whole-second
// agent timeout, because the C call cannot be cancelled once started.
func agentTimeout(ctx context.Context) virt.DomainQemuAgentCommandTimeout {
	d := agentCallTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	return virt.DomainQemuAgentCommandTimeout(max(1, int(d/time.Second)))
}

// classifyAgentError maps libvirt's many ways of saying "no agent" to
// vm.ErrAgentUnavailable so callers can simply retry later.
func classifyAgentError(err error) error {
	if hasCode(err,
		virt.ERR_AGENT_UNRESPONSIVE, virt.ERR_AGENT_UNSYNCED, virt.ERR_AGENT_COMMAND_TIMEOUT,
		// no agent channel configured, or the driver has no agent at all
		virt.ERR_ARGUMENT_UNSUPPORTED, virt.ERR_NO_SUPPORT,
		// the domain is not running, so neither is its agent
		virt.ERR_OPERATION_INVALID,
	) {
		return fmt.Errorf("%w: %w", vm.ErrAgentUnavailable, err)
	}
	return err
}

// runExec is the guest-exec protocol: start the process, then poll its
// status until it exits or ctx ends.
func runExec(ctx context.Context, call agentCall, req vm.ExecRequest) (vm.ExecResult, error) {
	if req.Path == "" {
		return vm.ExecResult{}, errors.New("empty path")
	}
	cmd, err := encodeAgentCommand("guest-exec", guestExecArgs{
		Path:          req.Path,
		Args:          req.Args,
		Env:           req.Env,
		InputData:     req.Input,
		CaptureOutput: true,
	})
	if err != nil {
		return vm.ExecResult{}, err
	}
	reply, err := call(ctx, cmd, false)
	if err != nil {
		return vm.ExecResult{}, fmt.Errorf("guest-exec: %w", err)
	}
	started, err := decodeAgentReply[guestExecReturn](reply)
	if err != nil {
		return vm.ExecResult{}, fmt.Errorf("guest-exec: %w", err)
	}

	statusCmd, err := encodeAgentCommand("guest-exec-status", guestExecStatusArgs(started))
	if err != nil {
		return vm.ExecResult{}, err
	}
	wait := execPollMin
	for {
		reply, err := call(ctx, statusCmd, true)
		if err != nil {
			if ctx.Err() != nil {
				return vm.ExecResult{}, execCtxErr(ctx, started.PID)
			}
			return vm.ExecResult{}, fmt.Errorf("guest-exec-status pid %d: %w", started.PID, err)
		}
		st, err := decodeAgentReply[guestExecStatus](reply)
		if err != nil {
			return vm.ExecResult{}, fmt.Errorf("guest-exec-status pid %d: %w", started.PID, err)
		}
		if st.Exited {
			return st.result(), nil
		}
		select {
		case <-ctx.Done():
			return vm.ExecResult{}, execCtxErr(ctx, started.PID)
		case <-time.After(wait):
		}
		wait = min(2*wait, execPollMax)
	}
}

func execCtxErr(ctx context.Context, pid int) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("guest pid %d still running: %w: %w", pid, vm.ErrExecTimeout, ctx.Err())
	}
	return fmt.Errorf("guest pid %d still running: %w", pid, ctx.Err())
}

// agentCommand is the QMP-style envelope every agent command uses.
type agentCommand struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
}

type guestExecArgs struct {
	Path string   `json:"path"`
	Args []string `json:"arg,omitempty"`
	Env  []string `json:"env,omitempty"`
	// []byte marshals as base64, which is what the agent expects;
	// omitzero (not omitempty) keeps an empty but non-nil input, which
	// still gives the process a closed stdin.
	InputData     []byte `json:"input-data,omitzero"`
	CaptureOutput bool   `json:"capture-output"`
}

type guestExecReturn struct {
	PID int `json:"pid"`
}

type guestExecStatusArgs struct {
	PID int `json:"pid"`
}

type guestExecStatus struct {
	Exited       bool   `json:"exited"`
	ExitCode     int    `json:"exitcode"`
	Signal       int    `json:"signal"`
	OutData      []byte `json:"out-data"`
	ErrData      []byte `json:"err-data"`
	OutTruncated bool   `json:"out-truncated"`
	ErrTruncated bool   `json:"err-truncated"`
}

func (s guestExecStatus) result() vm.ExecResult {
	return vm.ExecResult{
		ExitCode:  s.ExitCode,
		Signal:    s.Signal,
		Stdout:    s.OutData,
		Stderr:    s.ErrData,
		Truncated: s.OutTruncated || s.ErrTruncated,
	}
}

// agentReply is the envelope of every agent answer. libvirt normally turns
// "error" replies into a libvirt error itself, but decoding it here keeps
// a raw error reply from passing as success.
type agentReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

func encodeAgentCommand(execute string, args any) ([]byte, error) {
	b, err := json.Marshal(agentCommand{Execute: execute, Arguments: args})
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", execute, err)
	}
	return b, nil
}

func decodeAgentReply[T any](reply []byte) (T, error) {
	var zero T
	var env agentReply
	if err := json.Unmarshal(reply, &env); err != nil {
		return zero, fmt.Errorf("decode agent reply: %w", err)
	}
	if env.Error != nil {
		return zero, fmt.Errorf("agent error %s: %s", env.Error.Class, env.Error.Desc)
	}
	if env.Return == nil {
		return zero, fmt.Errorf("decode agent reply: no return value in %.200q", reply)
	}
	var v T
	if err := json.Unmarshal(env.Return, &v); err != nil {
		return zero, fmt.Errorf("decode agent return: %w", err)
	}
	return v, nil
}
