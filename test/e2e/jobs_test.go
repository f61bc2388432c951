package e2e

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

// anyEnded, in the states jobStates waits for, matches any terminal state.
const anyEnded api.JobState = "*ended"

// jobStates polls `labvm job list -o json` until the jobs' states are
// want, in id order (anyEnded matches any terminal state).
func (d *labvmd) jobStates(name string, timeout time.Duration, want ...api.JobState) api.JobList {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var list api.JobList
		d.jsonOut(&list, "job", "list", name)
		got := make([]api.JobState, len(list.Jobs))
		match := len(list.Jobs) == len(want)
		for i, j := range list.Jobs {
			got[i] = j.State
			if match && want[i] != j.State && !(want[i] == anyEnded && api.JobEnded(j.State)) {
				match = false
			}
		}
		if match {
			return list
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("job states of %s: %v, want %v\n%+v", name, got, want, list.Jobs)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestJobs is Alice's batch work: she queues runs on her instance, two at
// a time; follows their output; sees failures with their exit codes;
// cancels one; labvmd restarts under her jobs; she stops and starts the
// instance with work queued.
func TestJobs(t *testing.T) {
	image := requireHost(t)
	d := startDaemon(t)
	d.must("image", "import", "tiny", image, "--sha256", readSHA256(t, image))
	d.must("create", "alice-dev", "--image", "tiny", "--size", "Standard_B1s")

	t.Log("the default limit is the vCPU count; she allows two jobs at once")
	if out := d.must("job", "parallel", "alice-dev"); !strings.Contains(out, "up to 1 at once") {
		t.Fatalf("default parallel: %q", out)
	}
	d.must("job", "parallel", "alice-dev", "2")

	t.Log("three sleep-and-echo jobs: two run at once, the third waits")
	for _, n := range []string{"1", "2", "3"} {
		id := strings.TrimSpace(d.must("job", "submit", "alice-dev", "--", "sh", "-c",
			"echo start-"+n+"; sleep 6; echo done-"+n+"; echo err-"+n+" >&2"))
		if id != n {
			t.Fatalf("job id %q, want %s", id, n)
		}
	}
	d.jobStates("alice-dev", time.Minute, api.JobRunning, api.JobRunning, api.JobQueued)
	if out := d.must("list"); !strings.Contains(out, "Running (2 jobs, 1 queued)") {
		t.Errorf("list does not show the jobs:\n%s", out)
	}
	var inst api.Instance
	d.jsonOut(&inst, "show", "alice-dev")
	if inst.State != api.StateRunning || inst.JobsRunning != 2 || inst.JobsQueued != 1 {
		t.Errorf("show: state %q, jobs_running %d, jobs_queued %d", inst.State, inst.JobsRunning, inst.JobsQueued)
	}

	t.Log("she follows the third until it ends")
	r := d.labvm("job", "logs", "alice-dev", "3", "--follow")
	if r.code != 0 || r.stdout != "start-3\ndone-3\n" || !strings.Contains(r.stderr, "err-3") {
		t.Fatalf("follow job 3: %+v", r)
	}
	list := d.jobStates("alice-dev", time.Minute, api.JobSucceeded, api.JobSucceeded, api.JobSucceeded)
	for _, j := range list.Jobs[:2] {
		if j.ExitCode == nil || *j.ExitCode != 0 || j.StartedAt == nil || j.EndedAt == nil {
			t.Fatalf("job %d = %+v", j.ID, j)
		}
		if !list.Jobs[2].StartedAt.After(*j.StartedAt) {
			t.Errorf("job 3 started at %s, not after job %d (%s)", list.Jobs[2].StartedAt, j.ID, j.StartedAt)
		}
	}
	first := *list.Jobs[0].EndedAt
	if list.Jobs[1].EndedAt.Before(first) {
		first = *list.Jobs[1].EndedAt
	}
	if list.Jobs[2].StartedAt.Before(first.Add(-time.Second)) {
		t.Errorf("job 3 started at %s, before a slot freed at %s", list.Jobs[2].StartedAt, first)
	}
	if out := d.must("job", "logs", "alice-dev", "1"); out != "start-1\ndone-1\n" {
		t.Errorf("logs of job 1: %q", out)
	}

	t.Log("a failing job reports its exit code")
	d.must("job", "submit", "alice-dev", "--", "sh", "-c", "echo bad >&2; exit 7")
	if r := d.labvm("job", "logs", "alice-dev", "4", "--follow"); r.code != 7 || !strings.Contains(r.stderr, "bad") {
		t.Fatalf("follow of a failing job: %+v", r)
	}
	if out := d.must("job", "list", "alice-dev"); !strings.Contains(out, string(api.JobFailed)) || !strings.Contains(out, "exited with code 7") {
		t.Errorf("list does not show the failure:\n%s", out)
	}

	t.Log("cancel stops a running job in the guest")
	d.must("job", "submit", "alice-dev", "--", "sleep", "301")
	d.jobStates("alice-dev", time.Minute, anyEnded, anyEnded, anyEnded, anyEnded, api.JobRunning)
	if out := d.must("job", "cancel", "alice-dev", "5"); !strings.Contains(out, "cancelled") {
		t.Fatalf("cancel: %q", out)
	}
	if out := d.must("exec", "alice-dev", "--", "sh", "-c", "ps | grep -c '[s]leep 301' || true"); strings.TrimSpace(out) != "0" {
		t.Fatalf("sleep 301 still runs in the guest after cancel (%s)", out)
	}

	d.chapter(t, "bad input is refused clearly and changes nothing", func(t *testing.T) {
		d.mustFail("already ended", "job", "cancel", "alice-dev", "1")
		d.mustFail("has no job 99", "job", "logs", "alice-dev", "99")
		d.mustFail("usage: labvm job submit", "job", "submit", "alice-dev", "--")
		d.mustFail("not found", "job", "submit", "nobody-dev", "--", "true")
		d.mustFail("want a number", "job", "cancel", "alice-dev", "five")
		d.jobStates("alice-dev", 5*time.Second, api.JobSucceeded, api.JobSucceeded, api.JobSucceeded, api.JobFailed, api.JobCancelled)
	})

	t.Log("labvmd dies with two jobs running and one queued")
	for _, n := range []string{"6", "7"} {
		d.must("job", "submit", "alice-dev", "--", "sh", "-c", "sleep 10; echo survived-"+n)
	}
	d.must("job", "submit", "alice-dev", "--", "echo", "was queued")
	d.jobStates("alice-dev", time.Minute, anyEnded, anyEnded, anyEnded, anyEnded, anyEnded, api.JobRunning, api.JobRunning, api.JobQueued)
	d.kill()
	d.start()
	list = d.jobStates("alice-dev", 2*time.Minute, anyEnded, anyEnded, anyEnded, anyEnded, anyEnded, anyEnded, anyEnded, api.JobSucceeded)
	for _, j := range list.Jobs[5:7] {
		switch {
		case j.State == api.JobSucceeded:
			if out := d.must("job", "logs", "alice-dev", strconv.Itoa(j.ID)); out != "survived-"+strconv.Itoa(j.ID)+"\n" {
				t.Errorf("re-attached job %d output %q", j.ID, out)
			}
		case j.State == api.JobLost && j.Reason != "":
			t.Logf("job %d lost: %s", j.ID, j.Reason)
		default:
			t.Errorf("job %d after the restart: %s %q", j.ID, j.State, j.Reason)
		}
	}
	if out := d.must("job", "logs", "alice-dev", "8"); out != "was queued\n" {
		t.Errorf("queued job's output after the restart: %q", out)
	}

	t.Log("stop cancels the running job and keeps the queued one")
	d.must("job", "parallel", "alice-dev", "1")
	d.must("job", "submit", "alice-dev", "--", "sleep", "302")
	d.must("job", "submit", "alice-dev", "--", "echo", "after start")
	list = d.jobStates("alice-dev", time.Minute, append(slices.Repeat([]api.JobState{anyEnded}, 8), api.JobRunning, api.JobQueued)...)
	d.must("stop", "alice-dev")
	list = d.jobStates("alice-dev", 5*time.Second, append(slices.Repeat([]api.JobState{anyEnded}, 8), api.JobCancelled, api.JobQueued)...)
	if !strings.Contains(list.Jobs[8].Reason, "stopped") {
		t.Errorf("job 9 reason %q", list.Jobs[8].Reason)
	}
	d.mustFail("start it first", "job", "submit", "alice-dev", "--", "true")
	d.must("start", "alice-dev")
	d.jobStates("alice-dev", time.Minute, append(slices.Repeat([]api.JobState{anyEnded}, 9), api.JobSucceeded)...)
	if out := d.must("job", "logs", "alice-dev", "10"); out != "after start\n" {
		t.Errorf("output of the job queued across the stop: %q", out)
	}

	d.chapter(t, "the audit log has her job calls", func(t *testing.T) {
		if out := d.must("audit", "--instance", "alice-dev"); !strings.Contains(out, "job-submit") || !strings.Contains(out, "job-cancel") || !strings.Contains(out, "job-logs") {
			t.Errorf("audit lacks job calls:\n%s", out)
		}
	})

}
