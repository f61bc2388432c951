package jobs_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon"
	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/daemon/jobs"
	"github.com/labvm/labvm/vm"
	"github.com/labvm/labvm/vm/guest"
)

// fakeJobHV adds guest processes to the fake hypervisor: jobs run until
// the test ends them or a signal does, and their output files are a map.
type fakeJobHV struct {
	*daemontest.FakeHypervisor
	jmu     sync.Mutex
	nextPID int
	procs   map[int]*fakeProc
	files   map[string][]byte
}

type fakeProc struct {
	exited       bool
	code, signal int
}

var _ jobs.Runner = (*fakeJobHV)(nil)

func newFakeJobHV() *fakeJobHV {
	return &fakeJobHV{FakeHypervisor: daemontest.NewFakeHypervisor(), nextPID: 100, procs: map[int]*fakeProc{}, files: map[string][]byte{}}
}

func (f *fakeJobHV) StartProcess(ctx context.Context, name string, req vm.ExecRequest) (int, error) {
	if st, _ := f.DomainState(ctx, name); st != vm.DomainRunning {
		return 0, vm.ErrAgentUnavailable
	}
	f.jmu.Lock()
	defer f.jmu.Unlock()
	f.nextPID++
	f.procs[f.nextPID] = &fakeProc{}
	return f.nextPID, nil
}

func (f *fakeJobHV) ProcessStatus(ctx context.Context, name string, pid int) (vm.ProcessStatus, error) {
	if st, _ := f.DomainState(ctx, name); st != vm.DomainRunning {
		return vm.ProcessStatus{}, vm.ErrAgentUnavailable
	}
	f.jmu.Lock()
	defer f.jmu.Unlock()
	p, ok := f.procs[pid]
	if !ok {
		return vm.ProcessStatus{}, fmt.Errorf("pid %d: %w", pid, vm.ErrUnknownPID)
	}
	if p.exited {
		delete(f.procs, pid) // the agent forgets once it told
	}
	return vm.ProcessStatus{Exited: p.exited, ExitCode: p.code, Signal: p.signal}, nil
}

// Exec serves the job helpers (kill and read) and falls back to echoing.
func (f *fakeJobHV) Exec(ctx context.Context, name string, req vm.ExecRequest) (vm.ExecResult, error) {
	if len(req.Args) < 3 {
		return f.FakeHypervisor.Exec(ctx, name, req)
	}
	f.jmu.Lock()
	defer f.jmu.Unlock()
	switch req.Args[2] {
	case "labvm-kill":
		pid, _ := strconv.Atoi(req.Args[4])
		if p, ok := f.procs[pid]; ok && !p.exited {
			p.exited, p.signal = true, map[string]int{"TERM": 15, "KILL": 9}[req.Args[3]]
		}
		return vm.ExecResult{}, nil
	case "labvm-read":
		data := f.files[req.Args[3]]
		off, _ := strconv.ParseInt(req.Args[4], 10, 64)
		maxLen, _ := strconv.ParseInt(req.Args[5], 10, 64)
		size := int64(len(data))
		if off < 0 {
			off = max(0, size-maxLen)
		}
		off = min(off, size)
		chunk := data[off:min(size, off+maxLen)]
		return vm.ExecResult{Stdout: append([]byte(fmt.Sprintf("%d\n%d\n", size, off)), chunk...)}, nil
	}
	return f.FakeHypervisor.Exec(ctx, name, req)
}

// exit ends the job's process with code after it printed out.
func (f *fakeJobHV) exit(t *testing.T, jobID, pid, code int, out string) {
	t.Helper()
	f.jmu.Lock()
	defer f.jmu.Unlock()
	stdout, _ := guest.JobOutputPaths(jobID)
	f.files[stdout] = []byte(out)
	p, ok := f.procs[pid]
	if !ok {
		t.Fatalf("no process %d", pid)
	}
	p.exited, p.code = true, code
}

// jobDaemon runs a daemon on dir with hv; a second one on the same dir
// is the same labvmd restarted.
type jobDaemon struct {
	*daemontest.Daemon
	client *client.Client
	stop   func()
}

func startJobDaemon(t *testing.T, hv daemon.Hypervisor, dir string) *jobDaemon {
	t.Helper()
	td := daemontest.NewAt(t, dir, hv, nil, nil)
	return &jobDaemon{Daemon: td, client: td.Client, stop: func() {
		if err := td.Stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	}}
}

func (jd *jobDaemon) waitOp(t *testing.T, op api.Operation, err error) {
	t.Helper()
	if err == nil {
		_, err = jd.client.Wait(context.Background(), op.ID, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// waitJobs polls until the instance's job states are want, in id order.
func (jd *jobDaemon) waitJobs(t *testing.T, name string, want ...api.JobState) api.JobList {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := jd.client.Jobs(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		var got []api.JobState
		for _, j := range list.Jobs {
			got = append(got, j.State)
		}
		if slices.Equal(got, want) {
			return list
		}
		if time.Now().After(deadline) {
			t.Fatalf("job states %v, want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestJobQueueThroughAPI(t *testing.T) {
	hv := newFakeJobHV()
	jd := startJobDaemon(t, hv, t.TempDir())
	ctx := context.Background()
	c := jd.client
	op, err := c.CreateInstance(ctx, daemontest.TinyReq("alice-dev"))
	jd.waitOp(t, op, err)
	if _, err := c.SetJobParallel(ctx, "alice-dev", 2); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		j, err := c.SubmitJob(ctx, "alice-dev", []string{"sh", "-c", fmt.Sprintf("echo %d", i)})
		if err != nil || j.ID != i+1 {
			t.Fatalf("submit %d: %+v %v", i, j, err)
		}
	}
	list := jd.waitJobs(t, "alice-dev", api.JobRunning, api.JobRunning, api.JobQueued)
	if list.Parallel != 2 || list.ParallelDefault || list.Jobs[0].CommandLine != "sh -c 'echo 0'" {
		t.Fatalf("list = %+v", list)
	}
	if inst, _ := c.Instance(ctx, "alice-dev"); inst.State != api.StateRunning || inst.JobsRunning != 2 || inst.JobsQueued != 1 {
		t.Fatalf("instance shows %s, %d running, %d queued", inst.State, inst.JobsRunning, inst.JobsQueued)
	}

	t.Log("job 1 succeeds with its output kept; job 3 takes its slot")
	hv.exit(t, 1, list.Jobs[0].PID, 0, "hello\n")
	list = jd.waitJobs(t, "alice-dev", api.JobSucceeded, api.JobRunning, api.JobRunning)
	logs, err := c.JobLogs(ctx, "alice-dev", 1)
	if err != nil || string(logs.Stdout) != "hello\n" || *logs.Job.ExitCode != 0 {
		t.Fatalf("logs = %+v %v", logs, err)
	}

	t.Log("job 2 fails with its exit code")
	hv.exit(t, 2, list.Jobs[1].PID, 3, "")
	jd.waitJobs(t, "alice-dev", api.JobSucceeded, api.JobFailed, api.JobRunning)
	if j, _ := c.Job(ctx, "alice-dev", 2); *j.ExitCode != 3 || j.Reason != "exited with code 3" {
		t.Fatalf("job 2 = %+v", j)
	}

	t.Log("job 3 is cancelled: SIGTERM to its group")
	j, err := c.CancelJob(ctx, "alice-dev", 3)
	if err != nil || j.State != api.JobCancelled || j.Signal != 15 {
		t.Fatalf("cancel = %+v %v", j, err)
	}

	errs := []struct {
		name string
		do   func() error
		code api.Code
	}{
		{"cancel finished", func() error { _, err := c.CancelJob(ctx, "alice-dev", 1); return err }, api.CodeConflict},
		{"logs of unknown job", func() error { _, err := c.JobLogs(ctx, "alice-dev", 42); return err }, api.CodeNotFound},
		{"cancel unknown job", func() error { _, err := c.CancelJob(ctx, "alice-dev", 42); return err }, api.CodeNotFound},
		{"empty command", func() error { _, err := c.SubmitJob(ctx, "alice-dev", nil); return err }, api.CodeInvalidArgument},
		{"NUL in command", func() error { _, err := c.SubmitJob(ctx, "alice-dev", []string{"a\x00"}); return err }, api.CodeInvalidArgument},
		{"unknown instance", func() error { _, err := c.SubmitJob(ctx, "nobody", []string{"true"}); return err }, api.CodeNotFound},
		{"parallel too high", func() error { _, err := c.SetJobParallel(ctx, "alice-dev", 65); return err }, api.CodeInvalidArgument},
	}
	for _, e := range errs {
		if err := e.do(); !api.IsCode(err, e.code) {
			t.Errorf("%s: %v, want %s", e.name, err, e.code)
		}
	}
	if list, _ := c.Jobs(ctx, "alice-dev"); len(list.Jobs) != 3 {
		t.Fatalf("refused calls changed the jobs: %+v", list.Jobs)
	}

	t.Log("stop cancels the running job and keeps the queued one")
	if _, err := c.SetJobParallel(ctx, "alice-dev", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubmitJob(ctx, "alice-dev", []string{"sleep", "100"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubmitJob(ctx, "alice-dev", []string{"sleep", "200"}); err != nil {
		t.Fatal(err)
	}
	jd.waitJobs(t, "alice-dev", api.JobSucceeded, api.JobFailed, api.JobCancelled, api.JobRunning, api.JobQueued)
	op, err = c.Stop(ctx, "alice-dev")
	jd.waitOp(t, op, err)
	list = jd.waitJobs(t, "alice-dev", api.JobSucceeded, api.JobFailed, api.JobCancelled, api.JobCancelled, api.JobQueued)
	if !strings.Contains(list.Jobs[3].Reason, "stopped") {
		t.Fatalf("job 4 reason %q", list.Jobs[3].Reason)
	}
	if _, err := c.SubmitJob(ctx, "alice-dev", []string{"true"}); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "start it first") {
		t.Fatalf("submit to a stopped instance: %v", err)
	}

	t.Log("start runs the queue again")
	op, err = c.Start(ctx, "alice-dev")
	jd.waitOp(t, op, err)
	jd.waitJobs(t, "alice-dev", api.JobSucceeded, api.JobFailed, api.JobCancelled, api.JobCancelled, api.JobRunning)
}

// TestJobsSurviveRestart: a labvmd stopped with a job running and one
// queued re-attaches the first by pid and runs the second; a job whose pid
// the agent forgot is Lost with the reason.
func TestJobsSurviveRestart(t *testing.T) {
	hv := newFakeJobHV()
	dir := t.TempDir()
	jd := startJobDaemon(t, hv, dir)
	ctx := context.Background()
	op, err := jd.client.CreateInstance(ctx, daemontest.TinyReq("bob-dev"))
	jd.waitOp(t, op, err)
	// The fake's disk is never written: make it so reconcile keeps it.
	inst, _ := jd.client.Instance(ctx, "bob-dev")
	if err := os.WriteFile(jd.Paths.Disk(inst.ID), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"a", "b", "c"} {
		if _, err := jd.client.SubmitJob(ctx, "bob-dev", []string{cmd}); err != nil {
			t.Fatal(err)
		}
	}
	list := jd.waitJobs(t, "bob-dev", api.JobRunning, api.JobQueued, api.JobQueued)
	jd.stop()

	// While labvmd is down, a second slot opens and the agent forgets
	// nothing: job 1 is still running.
	hv.jmu.Lock()
	hv.procs[list.Jobs[0].PID] = &fakeProc{}
	hv.jmu.Unlock()
	jd = startJobDaemon(t, hv, dir)
	list = jd.waitJobs(t, "bob-dev", api.JobRunning, api.JobQueued, api.JobQueued)
	hv.exit(t, 1, list.Jobs[0].PID, 0, "re-attached\n")
	list = jd.waitJobs(t, "bob-dev", api.JobSucceeded, api.JobRunning, api.JobQueued)
	if logs, _ := jd.client.JobLogs(ctx, "bob-dev", 1); string(logs.Stdout) != "re-attached\n" {
		t.Fatalf("output of the re-attached job: %q", logs.Stdout)
	}
	jd.stop()

	hv.jmu.Lock()
	delete(hv.procs, list.Jobs[1].PID) // the guest rebooted, say
	hv.jmu.Unlock()
	jd = startJobDaemon(t, hv, dir)
	list = jd.waitJobs(t, "bob-dev", api.JobSucceeded, api.JobLost, api.JobRunning)
	if !strings.Contains(list.Jobs[1].Reason, "no longer knows pid") {
		t.Fatalf("lost job's reason: %q", list.Jobs[1].Reason)
	}
}
