package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/vm"
	"github.com/labvm/labvm/vm/guest"
)

// defaultScriptTimeout bounds a setup or startup script unless the
// create says otherwise.
const defaultScriptTimeout = 15 * time.Minute

// maxScriptLog bounds the script output kept on the host.
const maxScriptLog = 1 << 20

// scriptsOf validates the scripts of a create request.
func (e *Engine) scriptsOf(req api.CreateInstanceRequest) (storage.Scripts, error) {
	s := storage.Scripts{Setup: []byte(req.SetupScript), Startup: []byte(req.StartupScript), Timeout: defaultScriptTimeout}
	if req.ScriptTimeoutSeconds != 0 {
		if req.ScriptTimeoutSeconds < 1 || req.ScriptTimeoutSeconds > 24*3600 {
			return s, errdefs.Invalidf("script timeout %ds: want 1s to 24h", req.ScriptTimeoutSeconds)
		}
		s.Timeout = time.Duration(req.ScriptTimeoutSeconds) * time.Second
	}
	for kind, body := range map[guest.ScriptKind][]byte{guest.ScriptSetup: s.Setup, guest.ScriptStartup: s.Startup} {
		if len(body) == 0 {
			continue
		}
		if err := guest.ValidateScript(kind, body); err != nil {
			return s, errdefs.Invalidf("--%s-script: %v", kind, err)
		}
	}
	return s, nil
}

// pendingScripts lists what this boot must wait for: setup once, startup
// every boot, setup first.
func pendingScripts(inst vm.Instance) []guest.ScriptKind {
	var out []guest.ScriptKind
	if inst.Scripts.Setup && !inst.Scripts.SetupDone {
		out = append(out, guest.ScriptSetup)
	}
	if inst.Scripts.Startup {
		out = append(out, guest.ScriptStartup)
	}
	return out
}

// awaitScripts keeps the instance SettingUp until this boot's scripts have
// finished, then records how they ended. The guest's runner writes
// "EXIT BOOT_ID", read through the guest agent; matching the boot id keeps
// an earlier boot's result from counting. Guests without the agent are
// trusted on cloud-init's phone-home, which comes after runcmd.
func (e *Engine) awaitScripts(ctx context.Context, op *ops.Op, inst *vm.Instance, phoned <-chan struct{}) error {
	kinds := pendingScripts(*inst)
	if len(kinds) == 0 {
		return nil
	}
	limit := time.Duration(inst.Scripts.TimeoutSeconds)*time.Second + time.Minute
	for _, kind := range kinds {
		step := StepSetup
		if kind == guest.ScriptStartup {
			step = StepStartup
		}
		op.Stage(step, fmt.Sprintf("up to %s; output: labvm logs %s --%s", limit-time.Minute, inst.Name, kind))
		exit, err := e.waitScript(ctx, *inst, kind, limit, phoned)
		if err != nil {
			return err
		}
		e.saveScriptLog(ctx, *inst, kind)
		if kind == guest.ScriptSetup {
			inst.Scripts.SetupDone = true
			inst.Scripts.SetupExit = exit
			if err := e.setState(inst, inst.State, inst.StateReason); err != nil {
				return err
			}
		}
		if exit != nil && *exit != 0 {
			what := fmt.Sprintf("exited with %d", *exit)
			if *exit == 124 {
				what = fmt.Sprintf("did not finish within %ds", inst.Scripts.TimeoutSeconds)
			}
			return fmt.Errorf("the %s script %s; see `labvm logs %s --%s`", kind, what, inst.Name, kind)
		}
	}
	return nil
}

// waitScript returns the script's exit code, or nil when only a
// phone-home told that it ended.
func (e *Engine) waitScript(ctx context.Context, inst vm.Instance, kind guest.ScriptKind, limit time.Duration, phoned <-chan struct{}) (*int, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		exit, done, err := e.scriptStatus(ctx, inst, kind)
		if err == nil && done {
			return &exit, nil
		}
		if errors.Is(err, vm.ErrAgentUnavailable) {
			// No agent: cloud-init's phone-home comes after runcmd.
			select {
			case <-phoned:
				return nil, nil
			default:
			}
		}
		select {
		case <-e.stopping:
			return nil, ErrInterrupted
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("the %s script gave no result within %s; see `labvm logs %s --console`", kind, limit, inst.Name)
			}
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// scriptStatus reads the runner's status file and the current boot id.
func (e *Engine) scriptStatus(ctx context.Context, inst vm.Instance, kind guest.ScriptKind) (exit int, done bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := e.hv.Exec(cctx, inst.Domain, guest.ScriptStatusRequest(kind))
	if err != nil {
		return 0, false, err
	}
	return guest.ParseScriptStatus(kind, res.Stdout)
}

func (e *Engine) scriptLogPath(id string, kind guest.ScriptKind) string {
	return filepath.Join(e.paths.Dir(id), string(kind)+".log")
}

// fetchScriptLog reads a script's output from the guest (its last MiB).
func (e *Engine) fetchScriptLog(ctx context.Context, inst vm.Instance, kind guest.ScriptKind) ([]byte, error) {
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := e.hv.Exec(cctx, inst.Domain, guest.ScriptLogRequest(kind, maxScriptLog))
	if err != nil {
		return nil, err
	}
	return res.Stdout, nil
}

// saveScriptLog keeps a finished script's output on the host, so it can be
// read while the instance is stopped.
func (e *Engine) saveScriptLog(ctx context.Context, inst vm.Instance, kind guest.ScriptKind) {
	out, err := e.fetchScriptLog(ctx, inst, kind)
	if err != nil {
		e.log.Warn("fetch script output", "instance", inst.Name, "script", kind, "error", err)
		return
	}
	// The guest chose these bytes: keep at most what we asked for, even if
	// its agent answered with more.
	if len(out) > maxScriptLog {
		out = out[len(out)-maxScriptLog:]
	}
	if err := os.WriteFile(e.scriptLogPath(inst.ID, kind), out, 0o600); err != nil {
		e.log.Warn("keep script output", "instance", inst.Name, "script", kind, "error", err)
	}
}

// Logs returns the serial console log, a script's output or cloud-init's
// output (cloud-init-output.log). Logs can
// hold anything the guest printed, so they are the instance's own user's
// like every other access to the guest.
func (e *Engine) Logs(ctx context.Context, inst vm.Instance, kind string) (api.Logs, error) {
	out := api.Logs{Kind: kind}
	var content []byte
	var err error
	switch kind {
	case "", "console":
		out.Kind = "console"
		content, err = os.ReadFile(e.paths.Console(inst.ID))
		if os.IsNotExist(err) {
			content, err = nil, nil
		}
	case string(guest.ScriptSetup), string(guest.ScriptStartup):
		k := guest.ScriptKind(kind)
		if (k == guest.ScriptSetup && !inst.Scripts.Setup) || (k == guest.ScriptStartup && !inst.Scripts.Startup) {
			return out, errdefs.New(errdefs.ErrNotFound, "give one at creation with --"+kind+"-script FILE", "%s has no %s script", inst.Name, kind)
		}
		// A running guest has the freshest output, even mid-script.
		if inst.State.Check(vm.ActionAccess) == nil || inst.State == vm.StateSettingUp {
			content, err = e.fetchScriptLog(ctx, inst, k)
		}
		if err != nil || content == nil {
			content, err = os.ReadFile(e.scriptLogPath(inst.ID, k))
			if os.IsNotExist(err) {
				return out, errdefs.New(errdefs.ErrNotFound, "it appears once the script has run; the instance must be Running to read it live", "no %s output of %s yet", kind, inst.Name)
			}
		}
	case "cloud-init":
		content, err = e.cloudInitLog(ctx, inst)
	default:
		return out, errdefs.Invalidf("unknown log %q; use console, setup, startup or cloud-init", kind)
	}
	if err != nil {
		return out, err
	}
	if len(content) > maxScriptLog {
		content, out.Truncated = content[len(content)-maxScriptLog:], true
	}
	out.Content = string(content)
	return out, nil
}
