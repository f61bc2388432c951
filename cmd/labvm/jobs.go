package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/spf13/cobra"
)

func newJobCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "job",
		Short: "Queue commands to run in an instance, and follow them",
		Long: `Jobs are commands run in the guest through the QEMU guest agent, each in its
own process group, with stdout and stderr kept. An instance runs up to N jobs
at once — its vCPU count unless set with ` + "`labvm job parallel NAME N`" + ` — and
queues the rest, oldest first. Jobs survive labvmd restarts. Stopping the
instance cancels its running jobs and keeps the queued ones for its next
start. The last MiB of each stream is kept once a job ends; the 100 most
recent finished jobs of an instance are kept.`,
		GroupID: "access",
	}
	cmd.AddCommand(newJobSubmitCommand(a), newJobListCommand(a), newJobLogsCommand(a),
		newJobCancelCommand(a), newJobParallelCommand(a))
	return cmd
}

func parseJobID(s string) (int, error) {
	id, err := strconv.Atoi(s)
	if err != nil || id <= 0 {
		return 0, usageErrorf("job id %q: want a number, as `labvm job list NAME` shows", s)
	}
	return id, nil
}

func newJobSubmitCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "submit NAME -- COMMAND [ARGS…]",
		Short: "Queue a command; it starts at once when a slot is free. Prints the job id",
		Long: `Queue a command to run in the guest as root, without a shell (use sh -c '…'
for pipes). It starts at once if fewer jobs than the instance's limit run,
else when one ends. The job id is printed on stdout.`,
		Example: `  labvm job submit alice-dev -- python3 train.py --epochs 3
  labvm job submit alice-dev -- sh -c 'make -j4 2>&1 | tail -n 50'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 || cmd.ArgsLenAtDash() != 1 {
				return usageErrorf("usage: labvm job submit NAME -- COMMAND [ARGS…]")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			job, err := a.client().SubmitJob(cmd.Context(), args[0], args[1:])
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, job)
			}
			fmt.Fprintln(a.stdout, job.ID)
			fmt.Fprintf(a.stderr, "Job %d %s on %s; `labvm job logs %s %d --follow` follows it\n",
				job.ID, strings.ToLower(string(job.State)), job.Instance, job.Instance, job.ID)
			return nil
		},
	}
}

func newJobListCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "list NAME",
		Aliases: []string{"ls"},
		Short:   "List an instance's jobs: state, exit code, times",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := a.client().Jobs(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, list)
			}
			fmt.Fprintf(a.stdout, "%s: %d running, %d queued; %s\n", list.Instance, list.Running, list.Queued, parallelText(list))
			if len(list.Jobs) == 0 {
				fmt.Fprintf(a.stdout, "No jobs. Submit one with `labvm job submit %s -- COMMAND`.\n", list.Instance)
				return nil
			}
			rows := make([][]string, 0, len(list.Jobs))
			for _, j := range list.Jobs {
				rows = append(rows, []string{strconv.Itoa(j.ID), string(j.State), exitText(j), clip(j.CommandLine, 48),
					ago(j.SubmittedAt), tookText(j), orDash(j.Reason)})
			}
			return table(a.stdout, []string{"id", "state", "exit", "command", "submitted", "took", "reason"}, rows)
		},
	}
}

func parallelText(l api.JobList) string {
	if l.ParallelDefault {
		return fmt.Sprintf("up to %d at once (its vCPU count; change with `labvm job parallel %s N`)", l.Parallel, l.Instance)
	}
	return fmt.Sprintf("up to %d at once (`labvm job parallel %s 0` goes back to its vCPU count)", l.Parallel, l.Instance)
}

func exitText(j api.Job) string {
	switch {
	case j.Signal != 0:
		return fmt.Sprintf("signal %d", j.Signal)
	case j.ExitCode != nil:
		return strconv.Itoa(*j.ExitCode)
	}
	return "-"
}

func tookText(j api.Job) string {
	if j.StartedAt == nil {
		return "-"
	}
	end := time.Now()
	if j.EndedAt != nil {
		end = *j.EndedAt
	}
	return end.Sub(*j.StartedAt).Round(100 * time.Millisecond).String()
}

func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func newJobLogsCommand(a *app) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs NAME ID",
		Short: "Print a job's stdout and stderr (the last MiB of each)",
		Long: `Print a job's output: stdout to stdout, stderr to stderr. Only the last MiB of
each stream is kept. With --follow, print output as it comes until the job
ends, then exit with the job's exit code (1 if it was cancelled or lost).`,
		Args: exactArgs(2, "NAME and ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseJobID(args[1])
			if err != nil {
				return err
			}
			if follow {
				return a.followJob(cmd, args[0], id)
			}
			logs, err := a.client().JobLogs(cmd.Context(), args[0], id)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, logs)
			}
			if _, err := a.stdout.Write(logs.Stdout); err != nil {
				return err
			}
			if _, err := a.stderr.Write(logs.Stderr); err != nil {
				return err
			}
			if logs.Truncated {
				fmt.Fprintln(a.stderr, "labvm: earlier output was dropped; only the last MiB of each stream is kept")
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "print output as it comes until the job ends, then exit with its exit code")
	return cmd
}

// followJob streams a job's output and ends as the job did.
func (a *app) followJob(cmd *cobra.Command, name string, id int) error {
	job, err := a.client().FollowJobLogs(cmd.Context(), name, id, func(ev api.JobLogEvent) error {
		if a.json() {
			return printJSON(a.stdout, ev)
		}
		var w io.Writer
		switch {
		case ev.Notice != "":
			fmt.Fprintf(a.stderr, "labvm: %s\n", ev.Notice)
		case ev.Stream == "stdout":
			w = a.stdout
		case ev.Stream == "stderr":
			w = a.stderr
		}
		if w != nil {
			_, err := w.Write(ev.Data)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case job.Signal != 0:
		fmt.Fprintf(a.stderr, "labvm: job %d %s: %s\n", job.ID, job.State, job.Reason)
		return &exitError{code: 128 + job.Signal}
	case job.ExitCode != nil && job.State != api.JobCancelled:
		if *job.ExitCode != 0 {
			return &exitError{code: *job.ExitCode}
		}
		return nil
	}
	fmt.Fprintf(a.stderr, "labvm: job %d %s: %s\n", job.ID, job.State, job.Reason)
	return &exitError{code: 1}
}

func newJobCancelCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel NAME ID",
		Short: "Cancel a queued job, or stop a running one (SIGTERM to its process group, SIGKILL after 10s)",
		Args:  exactArgs(2, "NAME and ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseJobID(args[1])
			if err != nil {
				return err
			}
			job, err := a.client().CancelJob(cmd.Context(), args[0], id)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, job)
			}
			fmt.Fprintf(a.stdout, "Job %d of %s %s\n", job.ID, job.Instance, strings.ToLower(string(job.State)))
			return nil
		},
	}
}

func newJobParallelCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "parallel NAME [N]",
		Short: "Show or set how many jobs an instance runs at once (0: its vCPU count)",
		Long: `Show how many jobs the instance runs at once, or set it to N (1-64). 0 goes
back to the default, the instance's vCPU count. Lowering it stops no running
job; it only holds the queue until fewer run.`,
		Example: `  labvm job parallel alice-dev 2`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageErrorf("usage: labvm job parallel NAME [N] (got %d argument(s))", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				list api.JobList
				err  error
			)
			if len(args) == 1 {
				list, err = a.client().Jobs(cmd.Context(), args[0])
			} else {
				n, perr := strconv.Atoi(args[1])
				if perr != nil || n < 0 {
					return usageErrorf("N %q: want a number from 1 to 64, or 0 for the instance's vCPU count", args[1])
				}
				list, err = a.client().SetJobParallel(cmd.Context(), args[0], n)
			}
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, list)
			}
			fmt.Fprintf(a.stdout, "%s runs %s\n", list.Instance, parallelText(list))
			return nil
		},
	}
}

// stateText is an instance's state as list and show print it: with its
// running and queued jobs, e.g. "Running (2 jobs, 1 queued)".
func stateText(i api.Instance) string {
	return stateWithJobs(i.State, i.JobsRunning, i.JobsQueued)
}

// stateWithJobs is a state with the jobs running and queued beside it.
func stateWithJobs(state api.InstanceState, running, queued int) string {
	var parts []string
	switch running {
	case 0:
	case 1:
		parts = append(parts, "1 job")
	default:
		parts = append(parts, fmt.Sprintf("%d jobs", running))
	}
	if queued > 0 {
		parts = append(parts, fmt.Sprintf("%d queued", queued))
	}
	if len(parts) == 0 {
		return string(state)
	}
	return string(state) + " (" + strings.Join(parts, ", ") + ")"
}
