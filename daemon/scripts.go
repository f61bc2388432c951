package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/vm"
)

// defaultScriptTimeout bounds a setup or startup script unless the
// create says otherwise.
const defaultScriptTimeout = 15 * time.Minute

// maxScriptLog bounds the script output kept on the host.
const maxScriptLog = 1 << 20

// scriptsOf validates the scripts of a create request.
func (d *Daemon) scriptsOf(req api.CreateInstanceRequest) (storage.Scripts, error) {
	s := storage.Scripts{Setup: []byte(req.SetupScript), Startup: []byte(req.StartupScript), Timeout: defaultScriptTimeout}
	if req.ScriptTimeoutSeconds != 0 {
		if req.ScriptTimeoutSeconds < 1 || req.ScriptTimeoutSeconds > 24*3600 {
			return s, invalidf("script timeout %ds: want 1s to 24h", req.ScriptTimeoutSeconds)
		}
		s.Timeout = time.Duration(req.ScriptTimeoutSeconds) * time.Second
	}
	for kind, body := range map[storage.ScriptKind][]byte{storage.ScriptSetup: s.Setup, storage.ScriptStartup: s.Startup} {
		if len(body) == 0 {
			continue
		}
		if err := storage.ValidateScript(kind, body); err != nil {
			return s, &api.Error{Code: api.CodeInvalidArgument, Message: "--" + string(kind) + "-script: " + err.Error()}
		}
	}
	return s, nil
}

// pendingScripts lists what this boot must wait for: setup once, startup
// every boot, setup first.
func pendingScripts(inst vm.Instance) []storage.ScriptKind {
	var out []storage.ScriptKind
	if inst.Scripts.Setup && !inst.Scripts.SetupDone {
		out = append(out, storage.ScriptSetup)
	}
	if inst.Scripts.Startup {
		out = append(out, storage.ScriptStartup)
	}
	return out
}

// awaitScripts keeps the instance SettingUp until this boot's scripts have
// finished, then records how they ended. The guest's runner writes
// "EXIT BOOT_ID", read through the guest agent; matching the boot id keeps
// an earlier boot's result from counting. Guests without the agent are
// trusted on cloud-init's phone-home, which comes after runcmd.
func (d *Daemon) awaitScripts(ctx context.Context, op *Op, inst *vm.Instance, phoned <-chan struct{}) error {
	kinds := pendingScripts(*inst)
	if len(kinds) == 0 {
		return nil
	}
	limit := time.Duration(inst.Scripts.TimeoutSeconds)*time.Second + time.Minute
	for _, kind := range kinds {
		op.Stage(fmt.Sprintf("Running the %s script", kind), fmt.Sprintf("up to %s; output: labvm logs %s --%s", limit-time.Minute, inst.Name, kind))
		exit, err := d.waitScript(ctx, *inst, kind, limit, phoned)
		if err != nil {
			return err
		}
		d.saveScriptLog(ctx, *inst, kind)
		if kind == storage.ScriptSetup {
			inst.Scripts.SetupDone = true
			inst.Scripts.SetupExit = exit
			if err := d.setState(inst, inst.State, inst.StateReason); err != nil {
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
func (d *Daemon) waitScript(ctx context.Context, inst vm.Instance, kind storage.ScriptKind, limit time.Duration, phoned <-chan struct{}) (*int, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		exit, done, err := d.scriptStatus(ctx, inst, kind)
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
		case <-d.stopping:
			return nil, errInterrupted
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
func (d *Daemon) scriptStatus(ctx context.Context, inst vm.Instance, kind storage.ScriptKind) (exit int, done bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := d.hv.Exec(cctx, inst.Domain, vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c",
		"cat /proc/sys/kernel/random/boot_id; cat " + kind.StatusPath() + " 2>/dev/null || true"}})
	if err != nil {
		return 0, false, err
	}
	lines := strings.Split(strings.TrimSpace(string(res.Stdout)), "\n")
	if len(lines) < 2 {
		return 0, false, nil
	}
	boot, f := strings.TrimSpace(lines[0]), strings.Fields(lines[1])
	if len(f) < 2 || f[1] != boot {
		return 0, false, nil // an earlier boot's result
	}
	exit, err = strconv.Atoi(f[0])
	if err != nil {
		return 0, false, fmt.Errorf("read %s status %q: %w", kind, lines[1], err)
	}
	return exit, true, nil
}

func (d *Daemon) scriptLogPath(id string, kind storage.ScriptKind) string {
	return filepath.Join(d.cfg.instanceDir(id), string(kind)+".log")
}

// fetchScriptLog reads a script's output from the guest (its last MiB).
func (d *Daemon) fetchScriptLog(ctx context.Context, inst vm.Instance, kind storage.ScriptKind) ([]byte, error) {
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := d.hv.Exec(cctx, inst.Domain, vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c",
		"tail -c " + strconv.Itoa(maxScriptLog) + " " + kind.LogPath() + " 2>/dev/null || true"}})
	if err != nil {
		return nil, err
	}
	return res.Stdout, nil
}

// saveScriptLog keeps a finished script's output on the host, so it can be
// read while the instance is stopped.
func (d *Daemon) saveScriptLog(ctx context.Context, inst vm.Instance, kind storage.ScriptKind) {
	out, err := d.fetchScriptLog(ctx, inst, kind)
	if err != nil {
		d.log.Warn("fetch script output", "instance", inst.Name, "script", kind, "error", err)
		return
	}
	if err := os.WriteFile(d.scriptLogPath(inst.ID, kind), out, 0o600); err != nil {
		d.log.Warn("keep script output", "instance", inst.Name, "script", kind, "error", err)
	}
}

// getLogs returns the serial console log or a script's output. Logs can
// hold anything the guest printed, so they are the instance's own user's
// like every other access to the guest.
func (d *Daemon) getLogs(r *http.Request, c Caller) (response, error) {
	inst, err := d.instanceByName(r.PathValue("name"))
	if err != nil {
		return response{}, err
	}
	if err := d.authorizeInstance(c, PermAppAccess, inst); err != nil {
		return response{}, err
	}
	kind := r.URL.Query().Get("kind")
	out := api.Logs{Kind: kind}
	var content []byte
	switch kind {
	case "", "console":
		out.Kind = "console"
		content, err = os.ReadFile(d.consoleLog(inst.ID))
		if os.IsNotExist(err) {
			content, err = nil, nil
		}
	case string(storage.ScriptSetup), string(storage.ScriptStartup):
		k := storage.ScriptKind(kind)
		if (k == storage.ScriptSetup && !inst.Scripts.Setup) || (k == storage.ScriptStartup && !inst.Scripts.Startup) {
			return response{}, &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("%s has no %s script", inst.Name, kind), Hint: "give one at creation with --" + kind + "-script FILE"}
		}
		// A running guest has the freshest output, even mid-script.
		if inst.State.Check(vm.ActionAccess) == nil || inst.State == vm.StateSettingUp {
			content, err = d.fetchScriptLog(r.Context(), inst, k)
		}
		if err != nil || content == nil {
			content, err = os.ReadFile(d.scriptLogPath(inst.ID, k))
			if os.IsNotExist(err) {
				return response{}, &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("no %s output of %s yet", kind, inst.Name), Hint: "it appears once the script has run; the instance must be Running to read it live"}
			}
		}
	default:
		return response{}, invalidf("unknown log %q; use console, setup or startup", kind)
	}
	if err != nil {
		return response{}, err
	}
	if len(content) > maxScriptLog {
		content, out.Truncated = content[len(content)-maxScriptLog:], true
	}
	out.Content = string(content)
	return ok(out), nil
}
