package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
	"github.com/labvm/labvm/vm/guest"
	"github.com/labvm/labvm/vm/shell"
)

// jobCancelWait bounds how long a cancel call waits for the job to end:
// SIGTERM, the grace, SIGKILL and a few polls.
const jobCancelWait = jobKillGrace + 10*time.Second

// Wire is a job as the API shows it.
func Wire(inst vm.Instance, j vm.Job) api.Job {
	return api.Job{
		ID: j.ID, Instance: inst.Name, Command: j.Command, CommandLine: shell.Join(j.Command...),
		Submitter: j.Submitter, State: api.JobState(j.State.String()), Reason: j.Reason, PID: j.PID,
		ExitCode: j.ExitCode, Signal: j.Signal,
		SubmittedAt: j.SubmittedAt, StartedAt: j.StartedAt, EndedAt: j.EndedAt,
		StdoutBytes: j.StdoutSize, StderrBytes: j.StderrSize,
	}
}

// loadJob returns one job of inst, or an error matching ErrNoSuchJob.
func (e *Engine) Get(inst vm.Instance, id int) (vm.Job, error) {
	var j vm.Job
	err := e.store.View(func(tx *store.Tx) error {
		var err error
		j, err = tx.Job(inst.ID, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return j, fmt.Errorf("%s has no job %d: %w", inst.Name, id, ErrNoSuchJob)
	}
	return j, err
}

// Submit queues a command in inst for submitter.
func (e *Engine) Submit(inst vm.Instance, submitter string, command []string) (vm.Job, error) {
	if err := guest.ValidateCommand(command); err != nil {
		return vm.Job{}, errdefs.Invalidf("%v; use `labvm job submit NAME -- COMMAND [ARGS…]`", err)
	}
	if err := inst.State.Check(vm.ActionAccess); err != nil {
		return vm.Job{}, fmt.Errorf("submit a job to %s: %w", inst.Name, err)
	}
	if e.runner == nil {
		return vm.Job{}, errNoJobRunner
	}
	job := vm.Job{InstanceID: inst.ID, Command: command, Submitter: submitter, State: vm.JobQueued, SubmittedAt: time.Now().UTC()}
	err := e.store.Update(func(tx *store.Tx) error {
		// Re-checked in the transaction: the instance may be gone.
		if _, err := tx.Instance(inst.ID); err != nil {
			return err
		}
		var err error
		job, err = tx.CreateJob(job)
		return err
	})
	if err != nil {
		return vm.Job{}, fmt.Errorf("submit a job to %s: %w", inst.Name, err)
	}
	e.log.Info("job queued", "instance", inst.Name, "job", job.ID, "caller", submitter)
	e.jobs.notify()
	e.jobs.kick()
	return job, nil
}

// List is inst's jobs with the queue's figures.
func (e *Engine) List(inst vm.Instance) (api.JobList, error) {
	out := api.JobList{Instance: inst.Name, Jobs: []api.Job{}}
	var set int
	err := e.store.View(func(tx *store.Tx) error {
		jobs, err := tx.Jobs(inst.ID)
		if err != nil {
			return err
		}
		for _, j := range jobs {
			out.Jobs = append(out.Jobs, Wire(inst, j))
			switch {
			case j.State == vm.JobQueued:
				out.Queued++
			case j.State.Active():
				out.Running++
			}
		}
		set, err = tx.JobLimit(inst.ID)
		return err
	})
	out.Parallel, out.ParallelDefault = vm.JobLimit(set, inst), set == 0
	return out, err
}

// SetParallel sets how many of inst's jobs run at once (0: its vCPUs).
func (e *Engine) SetParallel(inst vm.Instance, n int) (api.JobList, error) {
	if n < 0 || n > vm.MaxJobParallel {
		return api.JobList{}, errdefs.Invalidf("parallel %d: want 1 to %d, or 0 for the default (the instance's vCPU count)", n, vm.MaxJobParallel)
	}
	err := e.store.Update(func(tx *store.Tx) error {
		if _, err := tx.Instance(inst.ID); err != nil {
			return err
		}
		return tx.SetJobLimit(inst.ID, n)
	})
	if err != nil {
		return api.JobList{}, err
	}
	e.jobs.kick()
	return e.List(inst)
}

// Cancel cancels a queued job at once; a started one is killed in the
// guest (its process group: SIGTERM, then SIGKILL after a grace) and the
// call waits, within jobCancelWait, for it to end Cancelled.
func (e *Engine) Cancel(ctx context.Context, inst vm.Instance, id int, reason string) (vm.Job, error) {
	var j vm.Job
	dequeued := false
	err := e.store.Update(func(tx *store.Tx) error {
		var err error
		if j, err = tx.Job(inst.ID, id); err != nil {
			return err
		}
		if dequeued = j.State == vm.JobQueued; !dequeued {
			return nil
		}
		if err := j.Move(vm.JobCancelled, reason, time.Now().UTC()); err != nil {
			return err
		}
		return tx.PutJob(j)
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return j, fmt.Errorf("%s has no job %d: %w", inst.Name, id, ErrNoSuchJob)
	case err != nil:
		return j, err
	case dequeued:
		e.jobs.notify()
		return j, nil
	case j.State.Terminal():
		return j, fmt.Errorf("cannot cancel job %d of %s: it already ended %s: %w", id, inst.Name, j.State, vm.ErrJobFinished)
	}
	lj := e.jobs.requestCancel(inst.ID, id, reason)
	if lj == nil {
		return j, fmt.Errorf("job %d of %s is %s but labvmd is not following it (labvmd is stopping?); try again: %w", id, inst.Name, j.State, errJobStillStopping)
	}
	wait, cancel := context.WithTimeout(ctx, jobCancelWait)
	defer cancel()
	select {
	case <-lj.done:
	case <-wait.Done():
		return j, fmt.Errorf("job %d of %s did not end within %s of SIGTERM; it will be recorded Cancelled when it ends: %w", id, inst.Name, jobCancelWait, errJobStillStopping)
	}
	return e.Get(inst, id)
}
