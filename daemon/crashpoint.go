package daemon

import (
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/labvm/labvm/daemon/api"
)

// crashPoint is a TEST-ONLY fault injector. cmd/labvmd fills
// Config.CrashAt from LABVM_CRASH_AT; when an operation reaches the named
// point the daemon SIGKILLs itself, so the fault-injection tests can prove
// that reconcile recovers from a crash at exactly that step. A timed kill
// from outside would land somewhere random and make the tests flaky.
//
// The syntax is OP/STAGE[/after], e.g. "create/Starting domain" (the stage
// is recorded as begun but has not acted yet) or "delete/Removing disk and
// seed/after" (the stage has acted; the next one has not begun). Stage
// names are the ones operations report, so `labvm wait` shows them.
type crashPoint struct {
	kind  api.OperationKind
	stage string
	after bool
}

// parseCrashPoint reads Config.CrashAt; "" disables the hook.
func parseCrashPoint(s string) (*crashPoint, error) {
	if s == "" {
		return nil, nil
	}
	kind, rest, ok := strings.Cut(s, "/")
	if !ok || kind == "" || rest == "" {
		return nil, fmt.Errorf("crash point %q: want OP/STAGE or OP/STAGE/after", s)
	}
	cp := &crashPoint{kind: api.OperationKind(kind), stage: rest}
	if stage, found := strings.CutSuffix(rest, "/after"); found {
		cp.stage, cp.after = stage, true
	}
	if strings.Contains(cp.stage, "/") {
		return nil, fmt.Errorf("crash point %q: stage names hold no '/'", s)
	}
	return cp, nil
}

// String is the point in LABVM_CRASH_AT's syntax.
func (c *crashPoint) String() string {
	s := string(c.kind) + "/" + c.stage
	if c.after {
		s += "/after"
	}
	return s
}

// check kills the process if (kind, stage, after) is the configured point.
// SIGKILL, not exit: deferred functions, buffered writes and libvirt's
// connection close must not run, exactly as after a real crash.
func (c *crashPoint) check(kind api.OperationKind, stage string, after bool) {
	if c == nil || stage == "" || c.kind != kind || c.stage != stage || c.after != after {
		return
	}
	fmt.Fprintf(os.Stderr, "labvmd: LABVM_CRASH_AT=%s reached: killing myself (test-only)\n", c)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is delivered asynchronously; never run on
}

// crashCheck is the hook's call site at a stage boundary: with begun
// false it is the current stage's "after" point (it acted; the next has
// not begun), with begun true the current stage's own point (recorded,
// not yet acted).
func (op *Op) crashCheck(begun bool) {
	cp := op.ops.crash
	if cp == nil {
		return
	}
	op.ops.mu.Lock()
	live := op.ops.running[op.id]
	var kind api.OperationKind
	var stage string
	if live != nil {
		kind = live.op.Kind
		if n := len(live.op.Stages); n > 0 {
			stage = live.op.Stages[n-1].Name
		}
	}
	op.ops.mu.Unlock()
	cp.check(kind, stage, !begun)
}
