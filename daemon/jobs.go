package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// jobRunner is the optional hypervisor capability behind jobs: start a
// guest process without waiting for it, and ask how it is doing. It is not
// part of Hypervisor so the daemon's fakes need not implement it.
type jobRunner interface {
	StartProcess(ctx context.Context, name string, req vm.ExecRequest) (int, error)
	ProcessStatus(ctx context.Context, name string, pid int) (vm.ProcessStatus, error)
}

var _ jobRunner = (*vm.Libvirt)(nil)

const (
	// jobPoll is how often the queue is looked at and each running job's
	// process is asked about.
	jobPoll = time.Second
	// jobKillGrace is how long a cancelled job has between SIGTERM and
	// SIGKILL.
	jobKillGrace = 10 * time.Second
	// jobGuestCall bounds one guest-agent round trip made for a job.
	jobGuestCall = 30 * time.Second
	// jobKeepFinished is how many finished jobs an instance keeps, with
	// their output; older ones are dropped.
	jobKeepFinished = 100
)

// errNoSuchJob is a job id the instance never had (or has pruned).
var errNoSuchJob = errors.New("no such job")

// errNoJobRunner means the hypervisor cannot run guest processes.
var errNoJobRunner = errors.New("this labvmd's hypervisor cannot run jobs")

// errJobStillStopping means a cancelled job did not end in time.
var errJobStillStopping = errors.New("job still stopping")

// jobScheduler is the in-memory side of the job queue. The store holds
// every job's state; this holds what exists only while labvmd runs: the
// goroutine following each started job, which instances are halted
// (being stopped), and counts for instance listings.
type jobScheduler struct {
	mu sync.Mutex
	// live are the started jobs followed by a goroutine, by instance id
	// and job id.
	live map[string]map[int]*liveJob
	// halted instances start no job: they are stopping or restarting.
	halted map[string]bool
	// queued counts queued jobs per instance, as of the last pass.
	queued map[string]int
	// changed is closed and replaced whenever a job changes state.
	changed chan struct{}
	kickc   chan struct{}
}

// liveJob is a started job's handle for cancelling it.
type liveJob struct {
	// cancelReason, set under jobScheduler.mu, asks the job's goroutine
	// to kill the process and record the job Cancelled with this reason.
	cancelReason string
	poke         chan struct{}
	done         chan struct{}
}

func newJobScheduler() *jobScheduler {
	return &jobScheduler{
		live:    map[string]map[int]*liveJob{},
		halted:  map[string]bool{},
		queued:  map[string]int{},
		changed: make(chan struct{}),
		kickc:   make(chan struct{}, 1),
	}
}

// kick asks for a pass over the queue soon.
func (s *jobScheduler) kick() {
	if s == nil {
		return
	}
	select {
	case s.kickc <- struct{}{}:
	default:
	}
}

// notify wakes everyone watching jobs change.
func (s *jobScheduler) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// watch returns a channel closed at the next job change.
func (s *jobScheduler) watch() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// counts is what instance listings show: jobs running (or starting) and
// queued.
func (s *jobScheduler) counts(instanceID string) (running, queued int) {
	if s == nil {
		return 0, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live[instanceID]), s.queued[instanceID]
}

// track registers a started job unless its instance is halted.
func (s *jobScheduler) track(instanceID string, id int) (*liveJob, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.halted[instanceID] {
		return nil, false
	}
	if s.live[instanceID] == nil {
		s.live[instanceID] = map[int]*liveJob{}
	}
	lj := &liveJob{poke: make(chan struct{}, 1), done: make(chan struct{})}
	s.live[instanceID][id] = lj
	return lj, true
}

func (s *jobScheduler) untrack(instanceID string, id int, lj *liveJob) {
	s.mu.Lock()
	if s.live[instanceID][id] == lj {
		delete(s.live[instanceID], id)
		if len(s.live[instanceID]) == 0 {
			delete(s.live, instanceID)
		}
	}
	s.mu.Unlock()
	close(lj.done)
}

// requestCancel asks a live job to stop; it returns nil when the job is
// not live. A reason already given is kept.
func (s *jobScheduler) requestCancel(instanceID string, id int, reason string) *liveJob {
	s.mu.Lock()
	defer s.mu.Unlock()
	lj := s.live[instanceID][id]
	if lj == nil {
		return nil
	}
	if lj.cancelReason == "" {
		lj.cancelReason = reason
	}
	select {
	case lj.poke <- struct{}{}:
	default:
	}
	return lj
}

func (s *jobScheduler) cancelReason(lj *liveJob) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return lj.cancelReason
}

// startJobs re-attaches the jobs that were running when labvmd last
// stopped and starts the scheduler. Everything runs under d.work; the
// returned function stops it.
func (d *Daemon) startJobs(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	if err := d.reattachJobs(ctx); err != nil {
		d.log.Error("re-attach jobs", "error", err)
	}
	d.work.Add(1)
	go func() {
		defer d.work.Done()
		tick := time.NewTicker(jobPoll)
		defer tick.Stop()
		for {
			d.schedulePass(ctx)
			select {
			case <-ctx.Done():
				return
			case <-d.jobs.kickc:
			case <-tick.C:
			}
		}
	}()
	return cancel
}

// reattachJobs follows again, by their guest pids, the jobs a previous
// labvmd left running. A job that cannot be followed is Lost with the
// reason; none is forgotten.
func (d *Daemon) reattachJobs(ctx context.Context) error {
	type found struct {
		inst vm.Instance
		ok   bool
		jobs []vm.Job
	}
	var all []found
	err := d.store.View(func(tx *store.Tx) error {
		ids, err := tx.JobInstances()
		if err != nil {
			return err
		}
		for _, id := range ids {
			f := found{}
			f.inst, err = tx.Instance(id)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			f.ok, f.inst.ID = err == nil, id
			if f.jobs, err = tx.Jobs(id); err != nil {
				return err
			}
			all = append(all, f)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, f := range all {
		if !f.ok {
			// The instance was deleted while labvmd was down.
			if err := d.store.Update(func(tx *store.Tx) error { return tx.DeleteJobs(f.inst.ID) }); err != nil {
				d.log.Warn("drop jobs of a deleted instance", "instance_id", f.inst.ID, "error", err)
			}
			continue
		}
		for _, j := range f.jobs {
			switch {
			case j.State == vm.JobStarting:
				d.endJob(j, vm.JobLost, "labvmd stopped while starting this job; it may have run in the guest without labvm following it")
			case j.State == vm.JobRunning && f.inst.State != vm.StateRunning:
				d.endJob(j, vm.JobLost, fmt.Sprintf("%s was %s when labvmd started again; the job's process is gone", f.inst.Name, f.inst.State))
			case j.State == vm.JobRunning:
				lj, ok := d.jobs.track(f.inst.ID, j.ID)
				if !ok {
					continue // halted: a stop is cancelling the instance's jobs
				}
				d.log.Info("re-attaching job", "instance", f.inst.Name, "job", j.ID, "pid", j.PID)
				d.work.Add(1)
				go d.runJob(ctx, f.inst, j, lj)
			}
		}
	}
	return nil
}

// schedulePass starts queued jobs wherever a Running instance has free
// slots, and refreshes the queued counts.
func (d *Daemon) schedulePass(ctx context.Context) {
	type launch struct {
		inst vm.Instance
		job  vm.Job
	}
	var todo []launch
	queued := map[string]int{}
	err := d.store.View(func(tx *store.Tx) error {
		ids, err := tx.JobInstances()
		if err != nil {
			return err
		}
		for _, id := range ids {
			inst, err := tx.Instance(id)
			if err != nil {
				continue // deleted; its jobs go with its record
			}
			jobs, err := tx.Jobs(id)
			if err != nil {
				return err
			}
			for _, j := range jobs {
				if j.State == vm.JobQueued {
					queued[id]++
				}
			}
			if inst.State != vm.StateRunning || queued[id] == 0 {
				continue
			}
			set, err := tx.JobLimit(id)
			if err != nil {
				return err
			}
			for _, j := range vm.NextToStart(jobs, vm.JobLimit(set, inst)) {
				todo = append(todo, launch{inst, j})
			}
		}
		return nil
	})
	if err != nil {
		d.log.Error("job queue pass", "error", err)
		return
	}
	for _, l := range todo {
		if ctx.Err() != nil {
			break
		}
		if d.launchJob(ctx, l.inst, l.job) {
			queued[l.inst.ID]--
		}
	}
	d.jobs.mu.Lock()
	d.jobs.queued = queued
	d.jobs.mu.Unlock()
}

// launchJob moves a queued job to Starting and hands it to its
// goroutine; false means it stays where it was.
func (d *Daemon) launchJob(ctx context.Context, inst vm.Instance, job vm.Job) bool {
	lj, ok := d.jobs.track(inst.ID, job.ID)
	if !ok {
		return false // the instance is being stopped
	}
	err := d.store.Update(func(tx *store.Tx) error {
		cur, err := tx.Job(inst.ID, job.ID)
		if err != nil {
			return err
		}
		if err := cur.Move(vm.JobStarting, "", time.Now().UTC()); err != nil {
			return err // cancelled meanwhile
		}
		job = cur
		return tx.PutJob(cur)
	})
	if err != nil {
		d.jobs.untrack(inst.ID, job.ID, lj)
		return false
	}
	d.jobs.notify()
	d.work.Add(1)
	go d.runJob(ctx, inst, job, lj)
	return true
}

// haltJobs is the stop hook: the instance starts no more jobs, and its
// running jobs are cancelled with reason; queued jobs stay queued for the
// next start. It waits, within ctx, for them to end.
func (d *Daemon) haltJobs(ctx context.Context, inst vm.Instance, reason string) {
	s := d.jobs
	if s == nil {
		return
	}
	s.mu.Lock()
	s.halted[inst.ID] = true
	ids := make([]int, 0, len(s.live[inst.ID]))
	for id := range s.live[inst.ID] {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, jobKillGrace+2*jobGuestCall)
	defer cancel()
	for _, id := range ids {
		if lj := s.requestCancel(inst.ID, id, reason); lj != nil {
			select {
			case <-lj.done:
			case <-ctx.Done():
				d.log.Warn("jobs still running at stop; they end with the guest", "instance", inst.Name, "error", ctx.Err())
				return
			}
		}
	}
}

// resumeJobs is the start hook: the instance is Running again and its
// queue moves on.
func (d *Daemon) resumeJobs(instanceID string) {
	if d.jobs == nil {
		return
	}
	d.jobs.mu.Lock()
	delete(d.jobs.halted, instanceID)
	d.jobs.mu.Unlock()
	d.jobs.kick()
}

// endJob records a job's end without a process status: Lost, Cancelled
// or Failed with the reason.
func (d *Daemon) endJob(job vm.Job, state vm.JobState, reason string) {
	err := d.store.Update(func(tx *store.Tx) error {
		cur, err := tx.Job(job.InstanceID, job.ID)
		if err != nil {
			return err
		}
		if err := cur.Move(state, reason, time.Now().UTC()); err != nil {
			return err
		}
		if err := tx.PutJob(cur); err != nil {
			return err
		}
		return tx.PruneJobs(job.InstanceID, jobKeepFinished)
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		d.log.Error("record job end", "instance_id", job.InstanceID, "job", job.ID, "state", state, "error", err)
	}
	d.log.Info("job ended", "instance_id", job.InstanceID, "job", job.ID, "state", state, "reason", reason)
	d.jobs.notify()
	d.jobs.kick()
}
