package policy

import (
	"context"
	"fmt"
	"time"

	"github.com/labvm/labvm/daemon/lifecycle"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/vm"
)

// statsTimeout bounds one read of libvirt's domain statistics.
const statsTimeout = 10 * time.Second

// idleClock is one Running instance's idle clock: since is its last use,
// so it has been idle for now-since.
type idleClock struct {
	limit time.Duration
	since time.Time

	// The CPU counter at the previous look, to average over the sample.
	cpuTime time.Duration
	cpuAt   time.Time
	cpuSeen bool

	// What the latest look found (shown by `labvm show`).
	last signals
}

// signals are what one look at an instance found.
type signals struct {
	now time.Time
	// sessions are open now; moved is when one last moved bytes.
	sessions int
	moved    time.Time
	// jobs are running or queued.
	jobs int
	// cpu is the guest's CPU use over the last sample, in percent of its
	// vCPUs; cpuKnown is false on the first look and when libvirt's
	// statistics could not be read.
	cpu      float64
	cpuKnown bool
}

func newIdleClock(limit time.Duration, now time.Time) *idleClock {
	return &idleClock{limit: limit, since: now}
}

// observe applies one look: a session that moved bytes moves the clock to
// when it did; a job, or CPU at or above threshold, to now.
func (c *idleClock) observe(s signals, threshold float64) {
	if s.moved.After(c.since) {
		c.since = s.moved
	}
	if s.jobs > 0 || (s.cpuKnown && s.cpu >= threshold) {
		c.since = s.now
	}
	c.last = s
}

// idleFor is how long the instance has been unused as of now.
func (c *idleClock) idleFor(now time.Time) time.Duration {
	if now.Before(c.since) {
		return 0
	}
	return now.Sub(c.since)
}

// due reports whether the instance has been unused for its whole limit.
// Without a CPU reading at the latest look it never is: the policy does
// not stop on missing facts.
func (c *idleClock) due(now time.Time) bool {
	return c.last.cpuKnown && c.idleFor(now) >= c.limit
}

// cpuSample turns the domain's CPU counter into its use since the
// previous look, in percent of vcpus. The first look, and the first after
// a reboot (the counter restarts), only take the baseline.
func (c *idleClock) cpuSample(total time.Duration, now time.Time, vcpus int) (float64, bool) {
	prev, prevAt, seen := c.cpuTime, c.cpuAt, c.cpuSeen
	c.cpuTime, c.cpuAt, c.cpuSeen = total, now, true
	wall := now.Sub(prevAt)
	if !seen || total < prev || wall <= 0 {
		return 0, false
	}
	if vcpus < 1 {
		vcpus = 1
	}
	return float64(total-prev) / float64(wall) / float64(vcpus) * 100, true
}

// runIdle looks at every instance each sample until ctx ends.
func (e *Engine) runIdle(ctx context.Context) {
	for {
		e.idlePass(ctx)
		t := e.clock.NewTimer(e.cfg.Sample)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// idlePass reads every signal once and stops the instances idle for
// their whole limit.
func (e *Engine) idlePass(ctx context.Context) {
	list, err := e.lc.Instances()
	if err != nil {
		e.log.Warn("idle shutdown: list instances", "error", err)
		return
	}
	watched := false
	exists := make(map[string]bool, len(list))
	for _, inst := range list {
		watched = watched || (inst.State == vm.StateRunning && inst.Policy.IdleShutdown > 0)
		exists[inst.ID] = true
	}
	e.Activity.prune(exists)
	var cpu map[string]time.Duration
	if watched && e.stats != nil {
		sctx, cancel := context.WithTimeout(ctx, statsTimeout)
		stats, err := e.stats.DomainStats(sctx)
		cancel()
		if err != nil {
			e.log.Warn("idle shutdown: read domain statistics; no instance is stopped on this look", "error", err)
		} else {
			cpu = make(map[string]time.Duration, len(stats))
			for _, s := range stats {
				cpu[s.InstanceID] = guestCPU(s)
			}
		}
	}
	now := e.clock.Now()
	type stop struct {
		inst vm.Instance
		idle time.Duration
	}
	var due []stop
	e.mu.Lock()
	seen := map[string]bool{}
	for _, inst := range list {
		limit := inst.Policy.IdleShutdown
		if inst.State != vm.StateRunning || limit <= 0 {
			continue
		}
		seen[inst.ID] = true
		c := e.idle[inst.ID]
		if c == nil || c.limit != limit {
			// A new boot, a daemon start or a changed limit: the clock
			// starts afresh.
			c = newIdleClock(limit, now)
			e.idle[inst.ID] = c
		}
		s := signals{now: now}
		s.sessions, s.moved = e.Activity.Last(inst.ID)
		running, queued := e.jobs.Counts(inst.ID)
		s.jobs = running + queued
		if total, ok := cpu[inst.ID]; ok {
			s.cpu, s.cpuKnown = c.cpuSample(total, now, inst.Size.VCPUs)
		}
		c.observe(s, e.cfg.CPUThreshold)
		if c.due(now) {
			due = append(due, stop{inst: inst, idle: c.idleFor(now)})
		}
	}
	for id := range e.idle {
		if !seen[id] {
			delete(e.idle, id)
		}
	}
	e.mu.Unlock()
	for _, d := range due {
		e.idleStop(d.inst, d.idle)
	}
}

// idleStop stops an instance for the idle policy, unless another
// operation holds it (the next look tries again).
func (e *Engine) idleStop(inst vm.Instance, idle time.Duration) {
	if holder, busy := e.ops.Holder(inst.ID); busy {
		e.log.Info("idle shutdown: instance busy; trying again at the next look", "instance", inst.Name, "operation", holder)
		return
	}
	who := ops.Who{Name: ActorIdle}
	op, err := e.lc.ActFor(lifecycle.PolicyAction{
		Who: who, Action: vm.ActionStop, OnlyFrom: []vm.State{vm.StateRunning},
		Reason: fmt.Sprintf("stopped by the idle shutdown: unused for %s (limit %s)", vm.FormatDuration(idle.Round(time.Second)), vm.FormatDuration(inst.Policy.IdleShutdown)),
	}, inst)
	if err != nil {
		e.log.Info("idle shutdown: not stopped", "instance", inst.Name, "error", err)
		return
	}
	e.ops.NoteAudit(op.ID, auditStop, inst.Name, who)
	e.log.Info("idle shutdown: stopping", "instance", inst.Name, "idle", idle.Round(time.Second), "limit", inst.Policy.IdleShutdown, "operation", op.ID)
	if e.observer != nil {
		e.observer.IdleStop()
	}
	e.mu.Lock()
	delete(e.idle, inst.ID)
	e.mu.Unlock()
}

// IdleStatus is an instance's idle shutdown as `labvm show` tells it.
type IdleStatus struct {
	// Limit is the idle shutdown; zero is off.
	Limit time.Duration
	// Watched is true while the instance runs under an idle clock; the
	// rest is what the latest look found.
	Watched  bool
	IdleFor  time.Duration
	Sessions int
	// LastSession is when a session last moved bytes (zero: none seen).
	LastSession time.Time
	Jobs        int
	CPUPercent  float64
	CPUKnown    bool
}

// IdleStatus reports an instance's idle clock.
func (e *Engine) IdleStatus(inst vm.Instance) IdleStatus {
	st := IdleStatus{Limit: inst.Policy.IdleShutdown}
	st.Sessions, st.LastSession = e.Activity.Last(inst.ID)
	running, queued := e.jobs.Counts(inst.ID)
	st.Jobs = running + queued
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.idle[inst.ID]
	if c == nil || inst.State != vm.StateRunning || st.Limit <= 0 {
		return st
	}
	st.Watched = true
	now := e.clock.Now()
	st.IdleFor = c.idleFor(now)
	if !st.LastSession.IsZero() && now.Sub(st.LastSession) < st.IdleFor {
		st.IdleFor = max(now.Sub(st.LastSession), 0)
	}
	st.CPUPercent, st.CPUKnown = c.last.cpu, c.last.cpuKnown
	return st
}

// guestCPU is the CPU time the guest itself used: its vCPUs' time, not
// QEMU's total, whose emulator and I/O threads cost an idle guest under
// TCG about as much again as its vCPU (measured 3-5% of a vCPU in all
// against 1-2% in the vCPU thread), enough to keep an unused instance
// over the threshold forever. QEMU's total stands in when libvirt did not
// report the vCPUs.
func guestCPU(s vm.DomainStats) time.Duration {
	if s.VCPUTime > 0 {
		return s.VCPUTime
	}
	return s.CPUTime
}
