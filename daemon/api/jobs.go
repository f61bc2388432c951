package api

import "time"

// SubmitJobRequest queues a command to run in the guest.
type SubmitJobRequest struct {
	Command []string `json:"command"`
}

// Job is one command run in an instance's guest.
type Job struct {
	ID       int      `json:"id"`
	Instance string   `json:"instance"`
	Command  []string `json:"command"`
	// CommandLine is Command quoted for a POSIX shell.
	CommandLine string   `json:"command_line"`
	Submitter   string   `json:"submitter"`
	State       JobState `json:"state"`
	// Reason says why a job failed, was cancelled or was lost.
	Reason      string     `json:"reason,omitempty"`
	PID         int        `json:"pid,omitempty"`
	ExitCode    *int       `json:"exit_code,omitempty"`
	Signal      int        `json:"signal,omitempty"`
	SubmittedAt time.Time  `json:"submitted_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`
	// StdoutBytes and StderrBytes are the streams' whole sizes, once the
	// job ended.
	StdoutBytes int64 `json:"stdout_bytes,omitempty"`
	StderrBytes int64 `json:"stderr_bytes,omitempty"`
}

// JobList is an instance's jobs and its queue's settings.
type JobList struct {
	Instance string `json:"instance"`
	// Parallel is how many jobs run at once; ParallelDefault says it is
	// the instance's vCPU count rather than a limit set for it.
	Parallel        int   `json:"parallel"`
	ParallelDefault bool  `json:"parallel_default"`
	Running         int   `json:"running"`
	Queued          int   `json:"queued"`
	Jobs            []Job `json:"jobs"`
}

// SetJobParallelRequest sets how many jobs an instance runs at once;
// 0 goes back to the default, its vCPU count.
type SetJobParallelRequest struct {
	Parallel int `json:"parallel"`
}

// JobLogs is a job's output: the last MiB of each stream.
type JobLogs struct {
	Job    Job    `json:"job"`
	Stdout []byte `json:"stdout"`
	Stderr []byte `json:"stderr"`
	// Truncated says earlier output was dropped.
	Truncated bool `json:"truncated,omitempty"`
}

// JobLogEvent is one line of a followed job's log stream (NDJSON): a
// chunk of one stream, a notice, or, last, the job as it ended.
type JobLogEvent struct {
	// Stream is "stdout" or "stderr" for a chunk.
	Stream string `json:"stream,omitempty"`
	// Offset is where Data starts in the stream.
	Offset int64  `json:"offset,omitempty"`
	Data   []byte `json:"data,omitempty"`
	// Notice tells about a gap or a wait, for people.
	Notice string `json:"notice,omitempty"`
	// Job is set on the last event, once the job ended.
	Job *Job `json:"job,omitempty"`
}
