package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
	"github.com/labvm/labvm/vm/shell"
)

// jobCancelWait bounds how long a cancel call waits for the job to end:
// SIGTERM, the grace, SIGKILL and a few polls.
const jobCancelWait = jobKillGrace + 10*time.Second

func apiJob(inst vm.Instance, j vm.Job) api.Job {
	return api.Job{
		ID: j.ID, Instance: inst.Name, Command: j.Command, CommandLine: shell.Join(j.Command...),
		Submitter: j.Submitter, State: j.State.String(), Reason: j.Reason, PID: j.PID,
		ExitCode: j.ExitCode, Signal: j.Signal,
		SubmittedAt: j.SubmittedAt, StartedAt: j.StartedAt, EndedAt: j.EndedAt,
		StdoutBytes: j.StdoutSize, StderrBytes: j.StderrSize,
	}
}

// jobInstance looks the instance up and checks that the caller is its own
// user: jobs are application access.
func (d *Daemon) jobInstance(r *http.Request, c Caller) (vm.Instance, error) {
	inst, err := d.instanceByName(r.PathValue("name"))
	if err != nil {
		return inst, err
	}
	return inst, d.authorizeInstance(c, PermAppAccess, inst)
}

func parseJobID(r *http.Request) (int, error) {
	s := r.PathValue("id")
	id, err := strconv.Atoi(s)
	if err != nil || id <= 0 {
		return 0, invalidf("job id %q: want the number `labvm job list NAME` shows", s)
	}
	return id, nil
}

// loadJob returns one job of inst, or an error matching errNoSuchJob.
func (d *Daemon) loadJob(inst vm.Instance, id int) (vm.Job, error) {
	var j vm.Job
	err := d.store.View(func(tx *store.Tx) error {
		var err error
		j, err = tx.Job(inst.ID, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return j, fmt.Errorf("%s has no job %d: %w", inst.Name, id, errNoSuchJob)
	}
	return j, err
}

func (d *Daemon) submitJob(r *http.Request, c Caller) (response, error) {
	var req api.SubmitJobRequest
	if err := decode(r, &req); err != nil {
		return response{}, err
	}
	if err := vm.ValidateCommand(req.Command); err != nil {
		return response{}, invalidf("%v; use `labvm job submit NAME -- COMMAND [ARGS…]`", err)
	}
	inst, err := d.jobInstance(r, c)
	if err != nil {
		return response{}, err
	}
	if err := inst.State.Check(vm.ActionAccess); err != nil {
		return response{}, fmt.Errorf("submit a job to %s: %w", inst.Name, err)
	}
	if _, ok := d.hv.(jobRunner); !ok {
		return response{}, errNoJobRunner
	}
	job := vm.Job{InstanceID: inst.ID, Command: req.Command, Submitter: c.Name, State: vm.JobQueued, SubmittedAt: time.Now().UTC()}
	err = d.store.Update(func(tx *store.Tx) error {
		// Re-checked in the transaction: the instance may be gone.
		if _, err := tx.Instance(inst.ID); err != nil {
			return err
		}
		var err error
		job, err = tx.CreateJob(job)
		return err
	})
	if err != nil {
		return response{}, fmt.Errorf("submit a job to %s: %w", inst.Name, err)
	}
	d.log.Info("job queued", "instance", inst.Name, "job", job.ID, "caller", c.Name)
	d.jobs.notify()
	d.jobs.kick()
	return ok(apiJob(inst, job)), nil
}

func (d *Daemon) jobList(inst vm.Instance) (api.JobList, error) {
	out := api.JobList{Instance: inst.Name, Jobs: []api.Job{}}
	var set int
	err := d.store.View(func(tx *store.Tx) error {
		jobs, err := tx.Jobs(inst.ID)
		if err != nil {
			return err
		}
		for _, j := range jobs {
			out.Jobs = append(out.Jobs, apiJob(inst, j))
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

func (d *Daemon) listJobs(r *http.Request, c Caller) (response, error) {
	inst, err := d.jobInstance(r, c)
	if err != nil {
		return response{}, err
	}
	list, err := d.jobList(inst)
	return ok(list), err
}

func (d *Daemon) getJob(r *http.Request, c Caller) (response, error) {
	inst, err := d.jobInstance(r, c)
	if err != nil {
		return response{}, err
	}
	id, err := parseJobID(r)
	if err != nil {
		return response{}, err
	}
	j, err := d.loadJob(inst, id)
	return ok(apiJob(inst, j)), err
}

func (d *Daemon) setJobParallel(r *http.Request, c Caller) (response, error) {
	var req api.SetJobParallelRequest
	if err := decode(r, &req); err != nil {
		return response{}, err
	}
	if req.Parallel < 0 || req.Parallel > vm.MaxJobParallel {
		return response{}, invalidf("parallel %d: want 1 to %d, or 0 for the default (the instance's vCPU count)", req.Parallel, vm.MaxJobParallel)
	}
	inst, err := d.jobInstance(r, c)
	if err != nil {
		return response{}, err
	}
	err = d.store.Update(func(tx *store.Tx) error {
		if _, err := tx.Instance(inst.ID); err != nil {
			return err
		}
		return tx.SetJobLimit(inst.ID, req.Parallel)
	})
	if err != nil {
		return response{}, err
	}
	d.jobs.kick()
	list, err := d.jobList(inst)
	return ok(list), err
}

func (d *Daemon) cancelJobHandler(r *http.Request, c Caller) (response, error) {
	inst, err := d.jobInstance(r, c)
	if err != nil {
		return response{}, err
	}
	id, err := parseJobID(r)
	if err != nil {
		return response{}, err
	}
	j, err := d.cancelJob(r.Context(), inst, id, "cancelled by "+c.Name)
	return ok(apiJob(inst, j)), err
}

// cancelJob cancels a queued job at once; a started one is killed in the
// guest (its process group: SIGTERM, then SIGKILL after a grace) and the
// call waits, within jobCancelWait, for it to end Cancelled.
func (d *Daemon) cancelJob(ctx context.Context, inst vm.Instance, id int, reason string) (vm.Job, error) {
	var j vm.Job
	dequeued := false
	err := d.store.Update(func(tx *store.Tx) error {
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
		return j, fmt.Errorf("%s has no job %d: %w", inst.Name, id, errNoSuchJob)
	case err != nil:
		return j, err
	case dequeued:
		d.jobs.notify()
		return j, nil
	case j.State.Terminal():
		return j, fmt.Errorf("cannot cancel job %d of %s: it already ended %s: %w", id, inst.Name, j.State, vm.ErrJobFinished)
	}
	lj := d.jobs.requestCancel(inst.ID, id, reason)
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
	return d.loadJob(inst, id)
}
