package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// Guest is what jobs need of the hypervisor: run a command and wait for
// it (reading output, signalling), and ask whether the domain runs.
type Guest interface {
	Exec(ctx context.Context, name string, req vm.ExecRequest) (vm.ExecResult, error)
	DomainState(ctx context.Context, name string) (vm.DomainStatus, error)
}

// Runner is the optional capability behind jobs: start a guest process
// without waiting for it, and ask how it is doing.
type Runner interface {
	StartProcess(ctx context.Context, name string, req vm.ExecRequest) (int, error)
	ProcessStatus(ctx context.Context, name string, pid int) (vm.ProcessStatus, error)
}

// Engine runs the job queue: it owns the jobs' goroutines and their
// in-memory state; the store holds every job.
type Engine struct {
	store  *store.Store
	log    *slog.Logger
	hv     Guest
	runner Runner
	jobs   *jobScheduler
	work   sync.WaitGroup
}

// New returns an engine. A hypervisor without Runner cannot run jobs;
// submitting one is then refused with a clear error.
func New(st *store.Store, hv Guest, log *slog.Logger) *Engine {
	r, _ := hv.(Runner)
	return &Engine{store: st, log: log, hv: hv, runner: r, jobs: newJobScheduler()}
}

// Counts is what instance listings show: jobs running (or starting) and
// queued.
func (e *Engine) Counts(instanceID string) (running, queued int) { return e.jobs.counts(instanceID) }

// Watch returns a channel closed at the next job change.
func (e *Engine) Watch() <-chan struct{} { return e.jobs.watch() }

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

// ErrNoSuchJob is a job id the instance never had (or has pruned).
var ErrNoSuchJob = errdefs.New(errdefs.ErrNotFound, "`labvm job list NAME` shows the instance's jobs", "no such job")

// errNoJobRunner means the hypervisor cannot run guest processes.
var errNoJobRunner = errdefs.New(errdefs.ErrUnavailable, "jobs need the QEMU guest agent through libvirt's qemu driver", "this labvmd's hypervisor cannot run jobs")

// errJobStillStopping means a cancelled job did not end in time.
var errJobStillStopping = errdefs.New(errdefs.ErrUnavailable, "`labvm job list NAME` shows when it has ended", "job still stopping")

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

// Start re-attaches the jobs that were running when labvmd last
// stopped and starts the scheduler. Everything runs under e.work; the
// returned function stops it.
func (e *Engine) Start(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	if err := e.reattachJobs(ctx); err != nil {
		e.log.Error("re-attach jobs", "error", err)
	}
	e.work.Add(1)
	go func() {
		defer e.work.Done()
		tick := time.NewTicker(jobPoll)
		defer tick.Stop()
		for {
			e.schedulePass(ctx)
			select {
			case <-ctx.Done():
				return
			case <-e.jobs.kickc:
			case <-tick.C:
			}
		}
	}()
	return func() {
		cancel()
		e.work.Wait()
	}
}

// reattachJobs follows again, by their guest pids, the jobs a previous
// labvmd left running. A job that cannot be followed is Lost with the
// reason; none is forgotten.
func (e *Engine) reattachJobs(ctx context.Context) error {
	type found struct {
		inst vm.Instance
		ok   bool
		jobs []vm.Job
	}
	var all []found
	err := e.store.View(func(tx *store.Tx) error {
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
			if err := e.store.Update(func(tx *store.Tx) error { return tx.DeleteJobs(f.inst.ID) }); err != nil {
				e.log.Warn("drop jobs of a deleted instance", "instance_id", f.inst.ID, "error", err)
			}
			continue
		}
		for _, j := range f.jobs {
			switch {
			case j.State == vm.JobStarting:
				e.endJob(j, vm.JobLost, "labvmd stopped while starting this job; it may have run in the guest without labvm following it")
			case j.State == vm.JobRunning && f.inst.State != vm.StateRunning:
				e.endJob(j, vm.JobLost, fmt.Sprintf("%s was %s when labvmd started again; the job's process is gone", f.inst.Name, f.inst.State))
			case j.State == vm.JobRunning:
				lj, ok := e.jobs.track(f.inst.ID, j.ID)
				if !ok {
					continue // halted: a stop is cancelling the instance's jobs
				}
				e.log.Info("re-attaching job", "instance", f.inst.Name, "job", j.ID, "pid", j.PID)
				e.work.Add(1)
				go e.runJob(ctx, f.inst, j, lj)
			}
		}
	}
	return nil
}

// schedulePass starts queued jobs wherever a Running instance has free
// slots, and refreshes the queued counts.
func (e *Engine) schedulePass(ctx context.Context) {
	type launch struct {
		inst vm.Instance
		job  vm.Job
	}
	var todo []launch
	queued := map[string]int{}
	err := e.store.View(func(tx *store.Tx) error {
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
		e.log.Error("job queue pass", "error", err)
		return
	}
	for _, l := range todo {
		if ctx.Err() != nil {
			break
		}
		if e.launchJob(ctx, l.inst, l.job) {
			queued[l.inst.ID]--
		}
	}
	e.jobs.mu.Lock()
	e.jobs.queued = queued
	e.jobs.mu.Unlock()
}

// launchJob moves a queued job to Starting and hands it to its
// goroutine; false means it stays where it was.
func (e *Engine) launchJob(ctx context.Context, inst vm.Instance, job vm.Job) bool {
	lj, ok := e.jobs.track(inst.ID, job.ID)
	if !ok {
		return false // the instance is being stopped
	}
	err := e.store.Update(func(tx *store.Tx) error {
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
		e.jobs.untrack(inst.ID, job.ID, lj)
		return false
	}
	e.jobs.notify()
	e.work.Add(1)
	go e.runJob(ctx, inst, job, lj)
	return true
}

// haltJobs is the stop hook: the instance starts no more jobs, and its
// running jobs are cancelled with reason; queued jobs stay queued for the
// next start. It waits, within ctx, for them to end.
func (e *Engine) Halt(ctx context.Context, inst vm.Instance, reason string) {
	s := e.jobs
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
				e.log.Warn("jobs still running at stop; they end with the guest", "instance", inst.Name, "error", ctx.Err())
				return
			}
		}
	}
}

// resumeJobs is the start hook: the instance is Running again and its
// queue moves on.
func (e *Engine) Resume(instanceID string) {
	if e.jobs == nil {
		return
	}
	e.jobs.mu.Lock()
	delete(e.jobs.halted, instanceID)
	e.jobs.mu.Unlock()
	e.jobs.kick()
}

// endJob records a job's end without a process status: Lost, Cancelled
// or Failed with the reason.
func (e *Engine) endJob(job vm.Job, state vm.JobState, reason string) {
	err := e.store.Update(func(tx *store.Tx) error {
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
		e.log.Error("record job end", "instance_id", job.InstanceID, "job", job.ID, "state", state, "error", err)
	}
	e.log.Info("job ended", "instance_id", job.InstanceID, "job", job.ID, "state", state, "reason", reason)
	e.jobs.notify()
	e.jobs.kick()
}
