package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/vm"
)

// What cloud-init leaves in the guest. /run is a tmpfs, so a file there
// was written this boot: result.json appears at the end of the final
// stage (a symlink into /var/lib/cloud/data, which init-local empties at
// every boot), status.json names the stage running now.
const (
	cloudInitResultPath = "/run/cloud-init/result.json"
	cloudInitStatusPath = "/run/cloud-init/status.json"
	cloudInitOutputPath = "/var/log/cloud-init-output.log"
)

// Bounds on what a guest may hand the daemon through these files.
const (
	// maxCloudInitJSON bounds a read of result.json or status.json.
	maxCloudInitJSON = 64 << 10
	// maxProvisionErrors and maxProvisionErrorLen bound the errors kept
	// in the record and shown in the state reason.
	maxProvisionErrors   = 5
	maxProvisionErrorLen = 300
	// guestReadTimeout bounds one agent exec of the readiness checks.
	guestReadTimeout = 10 * time.Second
)

// hasCloudInitScript decides, once per boot, whether the guest runs
// cloud-init; it prints "yes" or "no". The rule: an executable cloud-init
// in /usr/bin or /usr/local/bin, and cloud-init not disabled
// (/etc/cloud/cloud-init.disabled, or cloud-init=disabled on the kernel
// command line). Such a guest is ready when this boot's result.json
// exists; any other guest when its agent first answers.
const hasCloudInitScript = `if [ -e /etc/cloud/cloud-init.disabled ] || grep -qw cloud-init=disabled /proc/cmdline 2>/dev/null; then echo no
elif [ -x /usr/bin/cloud-init ] || [ -x /usr/local/bin/cloud-init ]; then echo yes
else echo no; fi`

// readGuestFileScript prints at most $2 bytes of file $1, or exits 3 when
// there is no such file.
const readGuestFileScript = `[ -e "$1" ] || exit 3; head -c "$2" "$1"`

// errGuestFileAbsent is a guest file that does not exist (yet).
var errGuestFileAbsent = errors.New("no such file in the guest")

// hasCloudInit runs the per-boot probe.
func (e *Engine) hasCloudInit(ctx context.Context, domain string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, guestReadTimeout)
	defer cancel()
	res, err := e.hv.Exec(ctx, domain, vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c", hasCloudInitScript}})
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(res.Stdout)) == "yes", nil
}

// readGuestFile reads up to max+1 bytes of a guest file, so the caller
// can tell a file over max from one at max.
func (e *Engine) readGuestFile(ctx context.Context, domain, path string, max int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, guestReadTimeout)
	defer cancel()
	res, err := e.hv.Exec(ctx, domain, vm.ExecRequest{Path: "/bin/sh",
		Args: []string{"-c", readGuestFileScript, "labvm-read", path, strconv.Itoa(max + 1)}})
	if err != nil {
		return nil, err
	}
	switch res.ExitCode {
	case 0:
	case 3:
		return nil, errGuestFileAbsent
	default:
		return nil, fmt.Errorf("read %s in the guest: exit %d: %s", path, res.ExitCode, clipGuestText(string(res.Stderr), 200))
	}
	out := res.Stdout
	if len(out) > max+1 { // the agent may send more than head printed
		out = out[:max+1]
	}
	return out, nil
}

// parseCloudInitResult reads result.json ({"v1": {"errors": [...]}}) and
// returns cloud-init's errors, bounded and escaped. A file that is too big
// or not cloud-init's JSON is an error: cloud-init writes it atomically,
// so it is never seen half-written.
func parseCloudInitResult(b []byte) ([]string, error) {
	if len(b) > maxCloudInitJSON {
		return nil, fmt.Errorf("%s is larger than %d KiB", cloudInitResultPath, maxCloudInitJSON>>10)
	}
	var doc struct {
		V1 *struct {
			Errors []json.RawMessage `json:"errors"`
		} `json:"v1"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %s", cloudInitResultPath, clipGuestText(err.Error(), 100))
	}
	if doc.V1 == nil {
		return nil, fmt.Errorf("%s has no \"v1\" object", cloudInitResultPath)
	}
	return boundErrors(doc.V1.Errors), nil
}

// boundErrors turns cloud-init's errors (strings, or anything else a
// guest wrote) into at most maxProvisionErrors escaped lines.
func boundErrors(raw []json.RawMessage) []string {
	var out []string
	for i, r := range raw {
		if i == maxProvisionErrors {
			out = append(out, fmt.Sprintf("… and %d more", len(raw)-i))
			break
		}
		var s string
		if err := json.Unmarshal(r, &s); err != nil {
			s = string(r) // not a string: its JSON text
		}
		out = append(out, clipGuestText(s, maxProvisionErrorLen))
	}
	return out
}

// cloudInitStages are status.json's stages in the order they run.
var cloudInitStages = []string{"init-local", "init", "modules-init", "modules-config", "modules-final"}

// parseCloudInitStatus says what cloud-init is doing from status.json:
// "cloud-init: modules-final" while a stage runs, "cloud-init: init
// finished" between stages. Anything unreadable says so; it is only a
// progress message.
func parseCloudInitStatus(b []byte) string {
	if len(b) > maxCloudInitJSON {
		return "cloud-init: status.json too large"
	}
	var doc struct {
		V1 map[string]json.RawMessage `json:"v1"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || doc.V1 == nil {
		return "cloud-init: status unreadable"
	}
	var stage *string
	if err := json.Unmarshal(doc.V1["stage"], &stage); err == nil && stage != nil && *stage != "" {
		return "cloud-init: " + clipGuestText(*stage, 40)
	}
	last := ""
	for _, name := range cloudInitStages {
		var st struct {
			Finished *float64 `json:"finished"`
		}
		if raw, ok := doc.V1[name]; ok && json.Unmarshal(raw, &st) == nil && st.Finished != nil {
			last = name
		}
	}
	if last == "" {
		return "cloud-init: starting"
	}
	return "cloud-init: " + last + " finished"
}

// clipGuestText makes guest-written text safe to show: at most max
// characters, control and bidi characters and invalid UTF-8 escaped, so it
// can neither forge lines nor drive a terminal.
func clipGuestText(s string, max int) string {
	var b strings.Builder
	n := 0
	for i := 0; i < len(s); {
		if n >= max {
			b.WriteString("…")
			break
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r < 0xa0, r >= 0x200b && r <= 0x200f, r >= 0x202a && r <= 0x202e,
			r >= 0x2066 && r <= 0x2069, r == 0x2028, r == 0x2029, r == 0xfeff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		i += size
		n++
	}
	return b.String()
}

// provisionError is the reason of a boot whose cloud-init reported errors.
func provisionError(name string, errs []string) error {
	return fmt.Errorf("cloud-init finished with errors: %s; see `labvm logs %s --cloud-init`", strings.Join(errs, "; "), name)
}

func (e *Engine) cloudInitLogPath(id string) string {
	return filepath.Join(e.paths.Dir(id), "cloud-init-output.log")
}

// fetchCloudInitLog reads the last MiB of cloud-init's output from the guest.
func (e *Engine) fetchCloudInitLog(ctx context.Context, inst vm.Instance) ([]byte, error) {
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := e.hv.Exec(cctx, inst.Domain, vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c",
		`[ -e "$1" ] || exit 3; tail -c "$2" "$1"`, "labvm-log", cloudInitOutputPath, strconv.Itoa(maxScriptLog)}})
	if err != nil {
		return nil, err
	}
	if res.ExitCode == 3 {
		return nil, errGuestFileAbsent
	}
	out := res.Stdout
	if len(out) > maxScriptLog { // the guest chose these bytes
		out = out[len(out)-maxScriptLog:]
	}
	return out, nil
}

// saveCloudInitLog keeps cloud-init's output of a finished boot on the
// host, so it can be read while the guest is down.
func (e *Engine) saveCloudInitLog(ctx context.Context, inst vm.Instance) {
	out, err := e.fetchCloudInitLog(ctx, inst)
	if err != nil {
		if !errors.Is(err, errGuestFileAbsent) {
			e.log.Warn("fetch cloud-init output", "instance", inst.Name, "error", err)
		}
		return
	}
	if err := os.WriteFile(e.cloudInitLogPath(inst.ID), out, 0o600); err != nil {
		e.log.Warn("keep cloud-init output", "instance", inst.Name, "error", err)
	}
}

// cloudInitLog is `labvm logs NAME --cloud-init`: live from a guest that
// may be up, else the copy kept when its last boot was provisioned.
func (e *Engine) cloudInitLog(ctx context.Context, inst vm.Instance) ([]byte, error) {
	switch inst.State {
	case vm.StateRunning, vm.StateSettingUp, vm.StateSetupFailed:
		if out, err := e.fetchCloudInitLog(ctx, inst); err == nil {
			return out, nil
		}
	}
	out, err := os.ReadFile(e.cloudInitLogPath(inst.ID))
	if os.IsNotExist(err) {
		return nil, errdefs.New(errdefs.ErrNotFound, "it appears once cloud-init has run; images without cloud-init have none",
			"no cloud-init output of %s yet", inst.Name)
	}
	return out, err
}
