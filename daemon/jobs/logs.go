package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
	"github.com/labvm/labvm/vm/guest"
)

var jobStreams = [2]string{"stdout", "stderr"}

// Snapshot is the last MiB of each stream: kept in the store once the
// job ended, read from the guest while it runs.
func (e *Engine) Snapshot(ctx context.Context, inst vm.Instance, job vm.Job) (api.JobLogs, error) {
	out := api.JobLogs{Job: Wire(inst, job), Stdout: []byte{}, Stderr: []byte{}}
	switch {
	case job.State.Terminal():
		kept, err := e.keptOutput(inst, job)
		if err != nil {
			return out, err
		}
		out.Stdout, out.Stderr = kept.Stdout, kept.Stderr
		out.Truncated = job.StdoutSize > int64(len(kept.Stdout)) || job.StderrSize > int64(len(kept.Stderr))
	case job.State == vm.JobRunning:
		paths := [2]string{}
		paths[0], paths[1] = guest.JobOutputPaths(job.ID)
		for i, p := range paths {
			c, err := e.readGuestOutput(ctx, inst, p, -1, vm.MaxJobOutput)
			if err != nil {
				return out, fmt.Errorf("read %s of job %d in %s: %w", jobStreams[i], job.ID, inst.Name, err)
			}
			out.Truncated = out.Truncated || c.Offset > 0
			if i == 0 {
				out.Stdout = c.Data
			} else {
				out.Stderr = c.Data
			}
		}
	}
	return out, nil
}

func (e *Engine) keptOutput(inst vm.Instance, job vm.Job) (store.JobOutput, error) {
	var kept store.JobOutput
	err := e.store.View(func(tx *store.Tx) error {
		var err error
		kept, err = tx.JobOutput(inst.ID, job.ID)
		return err
	})
	return kept, err
}

// Follow streams the job's output from the last MiB of each stream on,
// as the guest writes it, then what the job left in the store once it
// ended, then the ended job. It returns when the job ended or the client
// left; errors along the way become notices.
func (e *Engine) Follow(ctx context.Context, inst vm.Instance, job vm.Job, send func(api.JobLogEvent) bool) {
	offsets := [2]int64{-1, -1}
	paths := [2]string{}
	paths[0], paths[1] = guest.JobOutputPaths(job.ID)
	warned := false
	for {
		changed := e.jobs.watch()
		job, err := e.Get(inst, job.ID)
		if err != nil {
			send(api.JobLogEvent{Notice: err.Error()})
			return
		}
		if job.State.Terminal() {
			e.sendKeptOutput(inst, job, offsets, send)
			final := Wire(inst, job)
			send(api.JobLogEvent{Job: &final})
			return
		}
		more := false
		for i := range paths {
			if job.State != vm.JobRunning {
				break
			}
			c, err := e.readGuestOutput(ctx, inst, paths[i], offsets[i], vm.MaxJobOutput)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if !warned && !send(api.JobLogEvent{Notice: fmt.Sprintf("cannot read the job's output from the guest yet: %v", err)}) {
					return
				}
				warned = true
				continue
			}
			if offsets[i] < 0 && c.Offset > 0 && !send(api.JobLogEvent{Notice: fmt.Sprintf("the first %d bytes of %s are not shown", c.Offset, jobStreams[i])}) {
				return
			}
			if len(c.Data) > 0 && !send(api.JobLogEvent{Stream: jobStreams[i], Offset: c.Offset, Data: c.Data}) {
				return
			}
			offsets[i] = c.Offset + int64(len(c.Data))
			more = more || len(c.Data) == vm.MaxJobOutput
		}
		if more {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(jobPoll):
		}
	}
}

// sendKeptOutput sends what the store kept of each stream past what was
// already sent, with a notice for any gap.
func (e *Engine) sendKeptOutput(inst vm.Instance, job vm.Job, offsets [2]int64, send func(api.JobLogEvent) bool) {
	kept, err := e.keptOutput(inst, job)
	if err != nil {
		send(api.JobLogEvent{Notice: fmt.Sprintf("read the kept output: %v", err)})
		return
	}
	data := [2][]byte{kept.Stdout, kept.Stderr}
	sizes := [2]int64{job.StdoutSize, job.StderrSize}
	for i := range data {
		start := max(0, sizes[i]-int64(len(data[i]))) // stream offset of data[i][0]
		off := offsets[i]
		if off < 0 {
			off = start
		}
		if off < start {
			if !send(api.JobLogEvent{Notice: fmt.Sprintf("%d bytes of %s were dropped: only the last MiB is kept", start-off, jobStreams[i])}) {
				return
			}
			off = start
		}
		if rel := off - start; rel < int64(len(data[i])) {
			if !send(api.JobLogEvent{Stream: jobStreams[i], Offset: off, Data: data[i][rel:]}) {
				return
			}
		}
	}
}
