package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/spf13/cobra"
)

// waitFlags are shared by every command that starts an operation.
type waitFlags struct {
	noWait bool
}

func (f *waitFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.noWait, "no-wait", false, "return the operation id at once instead of waiting")
}

// follow waits for op, printing each stage as it happens. With --no-wait
// it prints the operation id (or the operation with -o json) and returns.
func (a *app) follow(ctx context.Context, op api.Operation, f waitFlags, doneMsg string) error {
	if f.noWait {
		if a.json() {
			return printJSON(a.stdout, op)
		}
		fmt.Fprintf(a.stdout, "%s\n", op.ID)
		return nil
	}
	p := newProgress(a.stderr, isTerminal(a.stderr) && !a.json())
	defer p.stop()
	final, err := a.client().Wait(ctx, op.ID, p.update)
	p.stop()
	if err != nil {
		return err
	}
	if a.json() {
		return printJSON(a.stdout, final)
	}
	if doneMsg != "" {
		fmt.Fprintf(a.stdout, "%s (%s)\n", doneMsg, opDuration(final).Round(100*time.Millisecond))
	}
	return nil
}

func opDuration(op api.Operation) time.Duration {
	if op.DoneAt == nil {
		return time.Since(op.CreatedAt)
	}
	return op.DoneAt.Sub(op.CreatedAt)
}

// progress prints operation stages. On a terminal the current stage line
// shows a live elapsed time, so a long wait for a slow guest never looks
// hung; elsewhere each stage is one plain line, good in logs.
type progress struct {
	w    io.Writer
	live bool

	mu      sync.Mutex
	printed int
	current *api.Stage
	ticker  *time.Ticker
	done    chan struct{}
	once    sync.Once
}

func newProgress(w io.Writer, live bool) *progress {
	p := &progress{w: w, live: live, done: make(chan struct{})}
	if live {
		p.ticker = time.NewTicker(time.Second)
		go p.tick()
	}
	return p
}

func (p *progress) tick() {
	for {
		select {
		case <-p.done:
			return
		case <-p.ticker.C:
			p.mu.Lock()
			p.redrawLocked()
			p.mu.Unlock()
		}
	}
}

func (p *progress) redrawLocked() {
	if p.current == nil || !p.live {
		return
	}
	el := time.Since(p.current.StartedAt).Round(time.Second)
	fmt.Fprintf(p.w, "\r\033[K  … %s  %s  %s", p.current.Name, dim(p.current.Detail), el)
}

func dim(s string) string {
	if s == "" {
		return ""
	}
	return "(" + s + ")"
}

func (p *progress) update(op api.Operation) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := p.printed; i < len(op.Stages); i++ {
		st := op.Stages[i]
		if st.DoneAt == nil {
			if p.current == nil || p.current.Name != st.Name || !p.current.StartedAt.Equal(st.StartedAt) {
				s := st
				p.current = &s
				if p.live {
					p.redrawLocked()
				} else {
					fmt.Fprintf(p.w, "  … %s %s\n", st.Name, dim(st.Detail))
				}
			} else if p.current.Detail != st.Detail {
				// A long stage reports progress in its detail (a download's
				// bar): redraw it now, not at the next tick. Logs get only
				// the stage's first line.
				p.current.Detail = st.Detail
				p.redrawLocked()
			}
			break
		}
		if p.live {
			fmt.Fprint(p.w, "\r\033[K")
		}
		fmt.Fprintf(p.w, "  ✓ %s %s\n", st.Name, st.DoneAt.Sub(st.StartedAt).Round(time.Millisecond))
		p.printed = i + 1
		p.current = nil
	}
}

func (p *progress) stop() {
	p.once.Do(func() {
		close(p.done)
		if p.ticker != nil {
			p.ticker.Stop()
		}
		p.mu.Lock()
		if p.live && p.current != nil {
			fmt.Fprint(p.w, "\r\033[K")
		}
		p.mu.Unlock()
	})
}

func newWaitCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "wait OPERATION",
		Short:   "Wait for an operation to finish, showing its progress",
		GroupID: "daemon",
		Args:    exactArgs(1, "OPERATION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := a.client().Operation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.follow(cmd.Context(), op, waitFlags{}, fmt.Sprintf("%s %s: done", op.Kind, op.Target))
		},
	}
}

func newOperationsCommand(a *app) *cobra.Command {
	var instance string
	cmd := &cobra.Command{
		Use:     "operations",
		Aliases: []string{"ops"},
		Short:   "List recent operations",
		Long: `List recent operations, oldest first. The whole list needs the reader
role; --instance lists one instance's operations, which its own user may
see without a role.`,
		Example: `  labvm operations
  labvm operations --instance web
  labvm ops --instance web -o json`,
		GroupID: "daemon",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ops []api.Operation
			var err error
			if instance != "" {
				ops, err = a.client().InstanceOperations(cmd.Context(), instance)
			} else {
				ops, err = a.client().Operations(cmd.Context())
			}
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, ops)
			}
			rows := make([][]string, 0, len(ops))
			for _, op := range ops {
				errMsg := ""
				if op.Error != nil {
					errMsg = op.Error.Message
				}
				rows = append(rows, []string{op.ID, string(op.Kind), op.Target, op.Caller, string(op.Status),
					opDuration(op).Round(time.Millisecond).String(), ago(op.CreatedAt), errMsg})
			}
			return table(a.stdout, []string{"id", "kind", "target", "caller", "status", "took", "started", "error"}, rows)
		},
	}
	cmd.Flags().StringVar(&instance, "instance", "", "only this instance's operations (allowed to its own user without a role)")
	return cmd
}

// exactArgs is cobra.ExactArgs with a message naming what is missing.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s takes %s (got %d argument(s)); usage: %s", cmd.Name(), names, len(args), cmd.UseLine())
		}
		return nil
	}
}

func newEventsCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "events",
		Short: "Follow operations and instance states as they change (Ctrl-C to stop)",
		Long: `Print every change of every operation you may see, and every change of an
instance's state, including those no operation made (a guest that powered
itself off, a domain found gone). Readers see all; others their own.

With -o json each line is an operation, or an instance change marked
"event": "instance".`,
		Example: `  labvm events
  labvm events -o json | jq -c 'select(.event == "instance")'`,
		GroupID: "daemon",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.client().FollowChanges(cmd.Context(), nil, func(ev api.Event) {
				if a.json() {
					var v any = ev.Operation
					if ev.Instance != nil {
						v = ev.Instance
					}
					_ = printJSONLine(a.stdout, v) // the terminal, as for fmt.Fprint*
					return
				}
				fmt.Fprintln(a.stdout, eventLine(time.Now(), ev))
			})
		},
	}
}

// eventLine is one event as `labvm events` prints it.
func eventLine(now time.Time, ev api.Event) string {
	if in := ev.Instance; in != nil {
		change := string(in.State)
		switch {
		case in.Gone:
			change = "deleted"
		case in.Previous != "":
			change = string(in.Previous) + " → " + change
		}
		if in.StateReason != "" && !in.Gone {
			change += "  " + in.StateReason
		}
		return fmt.Sprintf("%s  %-8s %-13s %-20s %s", now.Format("15:04:05"), "", "instance", in.Name, change)
	}
	op := *ev.Operation
	stage := ""
	if n := len(op.Stages); n > 0 {
		stage = op.Stages[n-1].Name
	}
	if op.Error != nil {
		stage = op.Error.Message
	}
	return fmt.Sprintf("%s  %-8.8s %-13s %-20s %-10s %s", now.Format("15:04:05"), op.ID, op.Kind, op.Target, op.Status, stage)
}
