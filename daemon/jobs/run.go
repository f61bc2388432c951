package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
	"github.com/labvm/labvm/vm/guest"
)

// runJob owns one started job until it ends or labvmd stops: it starts
// the guest process (for a Starting job), then follows it by pid, kills it
// when asked, and records how it ended with its output. When labvmd stops
// first, the job stays Running in the store and the next labvmd
// re-attaches to it.
func (e *Engine) runJob(ctx context.Context, inst vm.Instance, job vm.Job, lj *liveJob) {
	defer e.work.Done()
	defer e.jobs.notify()
	defer e.jobs.untrack(inst.ID, job.ID, lj)
	runner := e.runner
	if runner == nil {
		e.endJob(job, vm.JobFailed, errNoJobRunner.Error())
		return
	}
	if job.State == vm.JobStarting {
		if reason := e.jobs.cancelReason(lj); reason != "" {
			e.endJob(job, vm.JobCancelled, reason)
			return
		}
		var err error
		if job, err = e.startGuestJob(ctx, runner, inst, job); err != nil {
			e.log.Warn("job failed to start", "instance", inst.Name, "job", job.ID, "error", err)
			e.endJob(job, vm.JobFailed, fmt.Sprintf("could not start in the guest: %v", err))
			return
		}
	}
	e.followJob(ctx, runner, inst, job, lj)
}

// startGuestJob runs the job's wrapper through the agent and records the
// pid. Once sent, the start is finished and recorded even if labvmd is
// stopping, so the next labvmd can re-attach.
func (e *Engine) startGuestJob(ctx context.Context, runner Runner, inst vm.Instance, job vm.Job) (vm.Job, error) {
	req, err := guest.JobStartRequest(job.ID, job.Command)
	if err != nil {
		return job, err
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), jobGuestCall)
	defer cancel()
	pid, err := runner.StartProcess(sctx, inst.Domain, req)
	if err != nil {
		return job, err
	}
	err = e.store.Update(func(tx *store.Tx) error {
		cur, err := tx.Job(inst.ID, job.ID)
		if err != nil {
			return err
		}
		cur.PID = pid
		if err := cur.Move(vm.JobRunning, "", time.Now().UTC()); err != nil {
			return err
		}
		job = cur
		return tx.PutJob(cur)
	})
	if err != nil {
		return job, fmt.Errorf("record pid %d: %w", pid, err)
	}
	e.log.Info("job started", "instance", inst.Name, "job", job.ID, "pid", pid)
	e.jobs.notify()
	return job, nil
}

// followJob polls the job's process until it exits, signalling it when a
// cancel was asked for: SIGTERM to its process group, SIGKILL after
// jobKillGrace.
func (e *Engine) followJob(ctx context.Context, runner Runner, inst vm.Instance, job vm.Job, lj *liveJob) {
	var termAt time.Time
	killed := false
	for {
		reason := e.jobs.cancelReason(lj)
		switch {
		case reason != "" && termAt.IsZero():
			termAt = time.Now()
			e.signalJob(ctx, inst, job, "TERM")
		case reason != "" && !killed && time.Since(termAt) > jobKillGrace:
			killed = true
			e.signalJob(ctx, inst, job, "KILL")
		}
		sctx, cancel := context.WithTimeout(ctx, jobGuestCall)
		st, err := runner.ProcessStatus(sctx, inst.Domain, job.PID)
		cancel()
		switch {
		case ctx.Err() != nil:
			return // labvmd is stopping: re-attached at the next start
		case err == nil && st.Exited:
			e.finishJob(ctx, inst, job, st, reason)
			return
		case errors.Is(err, vm.ErrUnknownPID):
			e.loseJob(ctx, inst, job, reason, fmt.Sprintf("the guest agent no longer knows pid %d (the guest or its agent restarted?)", job.PID))
			return
		case err != nil:
			if gone := e.instanceGone(ctx, inst); gone != "" {
				e.loseJob(ctx, inst, job, reason, gone)
				return
			}
			e.log.Warn("job status", "instance", inst.Name, "job", job.ID, "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-lj.poke:
		case <-time.After(jobPoll):
		}
	}
}

// instanceGone says why a job's guest can no longer run it, or "" while
// it still can.
func (e *Engine) instanceGone(ctx context.Context, inst vm.Instance) string {
	var cur vm.Instance
	err := e.store.View(func(tx *store.Tx) error {
		var err error
		cur, err = tx.Instance(inst.ID)
		return err
	})
	if err != nil {
		return fmt.Sprintf("%s is gone", inst.Name)
	}
	if cur.State != vm.StateRunning {
		return fmt.Sprintf("%s went %s while the job ran", inst.Name, cur.State)
	}
	if st, err := e.hv.DomainState(ctx, inst.Domain); err == nil && st == vm.DomainAbsent {
		return fmt.Sprintf("%s's domain is gone", inst.Name)
	}
	return ""
}

// signalJob sends sig to the job's process group in the guest. A failure
// is logged; following the process tells whether it ended.
func (e *Engine) signalJob(ctx context.Context, inst vm.Instance, job vm.Job, sig string) {
	sctx, cancel := context.WithTimeout(ctx, jobGuestCall)
	defer cancel()
	res, err := e.hv.Exec(sctx, inst.Domain, guest.JobSignalRequest(job.PID, sig))
	if err == nil && res.ExitCode != 0 {
		err = fmt.Errorf("kill exited %d: %s", res.ExitCode, res.Stderr)
	}
	if err != nil {
		e.log.Warn("signal job", "instance", inst.Name, "job", job.ID, "signal", sig, "error", err)
	}
}

// finishJob records how the process ended, with the last MiB of each
// stream, and frees its slot.
func (e *Engine) finishJob(ctx context.Context, inst vm.Instance, job vm.Job, st vm.ProcessStatus, cancelReason string) {
	out, sizes := e.collectOutput(ctx, inst, job)
	err := e.store.Update(func(tx *store.Tx) error {
		cur, err := tx.Job(inst.ID, job.ID)
		if err != nil {
			return err
		}
		if err := cur.Finish(st.ExitCode, st.Signal, cancelReason, time.Now().UTC()); err != nil {
			return err
		}
		cur.StdoutSize, cur.StderrSize = sizes[0], sizes[1]
		job = cur
		if err := tx.PutJob(cur); err != nil {
			return err
		}
		if err := tx.PutJobOutput(inst.ID, job.ID, out); err != nil {
			return err
		}
		return tx.PruneJobs(inst.ID, jobKeepFinished)
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		e.log.Error("record job end", "instance", inst.Name, "job", job.ID, "error", err)
	}
	e.log.Info("job ended", "instance", inst.Name, "job", job.ID, "state", job.State, "exit_code", st.ExitCode, "signal", st.Signal)
	e.jobs.kick()
}

// loseJob ends a job whose process can no longer be followed: Cancelled
// when that was asked for, else Lost with why. What output the guest
// still has is kept.
func (e *Engine) loseJob(ctx context.Context, inst vm.Instance, job vm.Job, cancelReason, why string) {
	state, reason := vm.JobLost, why
	if cancelReason != "" {
		state, reason = vm.JobCancelled, cancelReason
	}
	if e.instanceGone(ctx, inst) == "" {
		if out, sizes := e.collectOutput(ctx, inst, job); sizes[0]+sizes[1] > 0 {
			err := e.store.Update(func(tx *store.Tx) error {
				cur, err := tx.Job(inst.ID, job.ID)
				if err != nil {
					return err
				}
				cur.StdoutSize, cur.StderrSize = sizes[0], sizes[1]
				if err := tx.PutJob(cur); err != nil {
					return err
				}
				return tx.PutJobOutput(inst.ID, job.ID, out)
			})
			if err != nil {
				e.log.Warn("keep output of a lost job", "instance", inst.Name, "job", job.ID, "error", err)
			}
		}
	}
	e.endJob(job, state, reason)
}

// collectOutput reads the last vm.MaxJobOutput bytes of each stream from
// the guest, and the streams' sizes. What cannot be read stays empty.
func (e *Engine) collectOutput(ctx context.Context, inst vm.Instance, job vm.Job) (store.JobOutput, [2]int64) {
	var out store.JobOutput
	var sizes [2]int64
	paths := [2]string{}
	paths[0], paths[1] = guest.JobOutputPaths(job.ID)
	for i, p := range paths {
		c, err := e.readGuestOutput(context.WithoutCancel(ctx), inst, p, -1, vm.MaxJobOutput)
		if err != nil {
			e.log.Warn("read job output", "instance", inst.Name, "job", job.ID, "file", p, "error", err)
			continue
		}
		sizes[i] = c.Size
		if i == 0 {
			out.Stdout = c.Data
		} else {
			out.Stderr = c.Data
		}
	}
	return out, sizes
}

// readGuestOutput reads up to max bytes of a job's output file from
// offset (negative: the last max bytes).
func (e *Engine) readGuestOutput(ctx context.Context, inst vm.Instance, path string, offset int64, max int) (guest.OutputChunk, error) {
	ctx, cancel := context.WithTimeout(ctx, jobGuestCall)
	defer cancel()
	res, err := e.hv.Exec(ctx, inst.Domain, guest.JobReadRequest(path, offset, max))
	if err != nil {
		return guest.OutputChunk{}, err
	}
	if res.ExitCode != 0 {
		return guest.OutputChunk{}, fmt.Errorf("reading %s exited %d: %s", path, res.ExitCode, res.Stderr)
	}
	return guest.ParseJobRead(res.Stdout)
}
