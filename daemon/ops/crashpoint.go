package ops

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// CrashPoint is a TEST-ONLY fault injector. cmd/labvmd fills the daemon's
// config from LABVM_CRASH_AT; when an operation reaches the named point
// the daemon SIGKILLs itself, so the fault-injection tests can prove that
// reconcile recovers from a crash at exactly that step. A timed kill from
// outside would land somewhere random and make the tests flaky.
//
// The syntax is KIND/STEP[/after], with the step's ID (Step.ID), e.g.
// "create/boot" (the step is recorded as begun but has not acted yet) or
// "delete/remove-files/after" (the step has acted; the next has not
// begun).
type CrashPoint struct {
	kind  string
	step  string
	after bool
}

// ParseCrashPoint reads the syntax above; "" disables the hook.
func ParseCrashPoint(s string) (*CrashPoint, error) {
	if s == "" {
		return nil, nil
	}
	kind, rest, ok := strings.Cut(s, "/")
	if !ok || kind == "" || rest == "" {
		return nil, fmt.Errorf("crash point %q: want KIND/STEP or KIND/STEP/after", s)
	}
	cp := &CrashPoint{kind: kind, step: rest}
	if step, found := strings.CutSuffix(rest, "/after"); found {
		cp.step, cp.after = step, true
	}
	if strings.Contains(cp.step, "/") {
		return nil, fmt.Errorf("crash point %q: step IDs hold no '/'", s)
	}
	return cp, nil
}

// String is the point in LABVM_CRASH_AT's syntax.
func (c *CrashPoint) String() string {
	s := c.kind + "/" + c.step
	if c.after {
		s += "/after"
	}
	return s
}

// check kills the process if (kind, step, after) is the configured point.
// SIGKILL, not exit: deferred functions, buffered writes and libvirt's
// connection close must not run, exactly as after a real crash.
func (c *CrashPoint) check(kind, step string, after bool) {
	if c == nil || step == "" || c.kind != kind || c.step != step || c.after != after {
		return
	}
	fmt.Fprintf(os.Stderr, "labvmd: LABVM_CRASH_AT=%s reached: killing myself (test-only)\n", c)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is delivered asynchronously; never run on
}

// crashCheck is the hook's call site at a step boundary: with begun false
// it is the current step's "after" point (it acted; the next has not
// begun), with begun true the current step's own point (recorded, not yet
// acted).
func (op *Op) crashCheck(begun bool) {
	cp := op.e.crash
	if cp == nil {
		return
	}
	op.e.mu.Lock()
	live := op.e.running[op.id]
	var kind, step string
	if live != nil {
		kind = live.op.Kind
		if n := len(live.op.Stages); n > 0 {
			step = live.op.Stages[n-1].Step
		}
	}
	op.e.mu.Unlock()
	cp.check(kind, step, !begun)
}
