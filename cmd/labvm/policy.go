package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/spf13/cobra"
)

func newIdleShutdownCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "idle-shutdown NAME DURATION|off",
		Short: "Stop an instance after it has been unused for a while",
		Long: `Set or clear an instance's idle shutdown. An instance counts as unused while
no session through labvmd (ssh, tunnel, forward, open, console, exec) moves
bytes, no job runs or waits, and its CPU stays below the host's threshold;
any of these starts the clock again. After DURATION of that it is stopped
like ` + "`labvm stop`" + ` (disk, address and quota kept), recorded as done by
policy:idle. DURATION is at least 15m and at most 3d (the host may allow
less); ` + "`labvm show NAME`" + ` shows the clock.`,
		Example: `  labvm idle-shutdown alice-dev 30m
  labvm idle-shutdown alice-dev 2h
  labvm idle-shutdown alice-dev off`,
		GroupID: "instances",
		Args:    exactArgs(2, "NAME DURATION|off"),
		RunE: func(cmd *cobra.Command, args []string) error {
			inst, err := a.client().SetIdleShutdown(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, inst.IdleShutdown)
			}
			if inst.IdleShutdown.Limit == "" {
				fmt.Fprintf(a.stdout, "Idle shutdown of %s is off\n", inst.Name)
				return nil
			}
			fmt.Fprintf(a.stdout, "%s stops after %s unused\n", inst.Name, inst.IdleShutdown.Limit)
			return nil
		},
	}
}

// idleLine is the Idle row of `labvm show`: "12m of 30m (no sessions,
// no jobs, CPU 0.4%)".
func idleLine(inst api.Instance) string {
	idle := inst.IdleShutdown
	if idle.Limit == "" {
		return "no idle shutdown (set one with `labvm idle-shutdown " + inst.Name + " 30m`)"
	}
	if !idle.Watched {
		return "stops after " + idle.Limit + " unused (clock runs while Running)"
	}
	var why []string
	switch {
	case idle.SessionsOpen > 0:
		why = append(why, plural(idle.SessionsOpen, "session")+" open")
	case idle.LastSessionAt != nil:
		why = append(why, "last session "+ago(*idle.LastSessionAt))
	default:
		why = append(why, "no sessions")
	}
	if idle.Jobs > 0 {
		why = append(why, plural(idle.Jobs, "job"))
	} else {
		why = append(why, "no jobs")
	}
	if idle.CPUPercent != nil {
		why = append(why, fmt.Sprintf("CPU %.1f%%", *idle.CPUPercent))
	} else {
		why = append(why, "CPU not measured yet")
	}
	return fmt.Sprintf("%s of %s (%s)", shortDuration(time.Duration(idle.IdleSeconds)*time.Second), idle.Limit, strings.Join(why, ", "))
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// shortDuration is a duration in its two largest units: 12m, 1h5m, 45s.
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// scheduleLines are the Schedule rows of `labvm show`.
func scheduleLines(inst api.Instance) []string {
	var out []string
	for _, s := range inst.Schedules {
		out = append(out, scheduleText(s))
	}
	return out
}

func scheduleText(s api.Schedule) string {
	var parts []string
	if s.Stop != "" {
		parts = append(parts, fmt.Sprintf("stop %q", s.Stop))
	}
	if s.Start != "" {
		parts = append(parts, fmt.Sprintf("start %q", s.Start))
	}
	line := fmt.Sprintf("#%d %s %s", s.ID, strings.Join(parts, ", "), s.Timezone)
	if s.Next != nil {
		line += "; next: " + runText(*s.Next, s.Timezone)
	}
	if s.Last != nil {
		line += "; last: " + runText(*s.Last, s.Timezone)
	}
	return line
}

func runText(r api.ScheduleRun, zone string) string {
	at := r.At
	if loc, err := time.LoadLocation(zone); err == nil {
		at = at.In(loc)
	}
	text := r.Action + " " + at.Format("Mon 2006-01-02 15:04 MST")
	switch {
	case r.Skipped != "":
		text += " (skipped: " + r.Skipped + ")"
	case r.Operation != "":
		text += " (operation " + r.Operation + ")"
	}
	if r.Missed {
		text += " [missed while labvmd was down; applied at its start]"
	}
	return text
}

func newScheduleCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Start and stop instances at set times (cron)",
		Long: `Schedules start and stop an instance at the times of cron expressions
(MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK, or @daily, @hourly…) in a time
zone from the host's zoneinfo. Each action is an ordinary start or stop
recorded as done by policy:schedule; one that finds the instance already
there, or busy, does nothing and says why in ` + "`schedule list`" + ` and the
audit log. If labvmd was down when an action came due, the latest action
missed is applied once when it starts again.`,
		GroupID: "instances",
	}
	cmd.AddCommand(newScheduleAddCommand(a), newScheduleListCommand(a), newScheduleRemoveCommand(a))
	return cmd
}

func newScheduleAddCommand(a *app) *cobra.Command {
	var req api.CreateScheduleRequest
	cmd := &cobra.Command{
		Use:   "add NAME [--stop CRON] [--start CRON] --timezone ZONE",
		Short: "Add a start/stop schedule to an instance",
		Example: `  labvm schedule add alice-dev --stop "0 19 * * 1-5" --start "0 8 * * 1-5" --timezone Europe/Lisbon
  labvm schedule add alice-dev --stop @daily --timezone UTC`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Stop == "" && req.Start == "" {
				return usageErrorf("give --stop CRON, --start CRON or both")
			}
			if req.Timezone == "" {
				return usageErrorf("--timezone is required, e.g. --timezone Europe/Lisbon or --timezone UTC")
			}
			s, err := a.client().AddSchedule(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, s)
			}
			fmt.Fprintf(a.stdout, "Schedule %d added to %s: %s\n", s.ID, args[0], scheduleText(s))
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Stop, "stop", "", `when to stop it, a cron expression such as "0 19 * * 1-5"`)
	cmd.Flags().StringVar(&req.Start, "start", "", `when to start it, a cron expression such as "0 8 * * 1-5"`)
	cmd.Flags().StringVar(&req.Timezone, "timezone", "", "the time zone of the times, e.g. Europe/Lisbon or UTC")
	return cmd
}

func newScheduleListCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "list [NAME]",
		Aliases: []string{"ls"},
		Short:   "List the schedules of an instance, or every one you may see",
		Example: `  labvm schedule list
  labvm schedule list alice-dev -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			list, err := a.client().Schedules(cmd.Context(), name)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, list)
			}
			if len(list) == 0 {
				fmt.Fprintln(a.stdout, "No schedules. Add one with `labvm schedule add NAME --stop CRON --start CRON --timezone ZONE`.")
				return nil
			}
			rows := make([][]string, 0, len(list))
			for _, s := range list {
				next, last := "-", "-"
				if s.Next != nil {
					next = runText(*s.Next, s.Timezone)
				}
				if s.Last != nil {
					last = runText(*s.Last, s.Timezone)
				}
				rows = append(rows, []string{strconv.Itoa(s.ID), s.Instance, orDash(s.Stop), orDash(s.Start), s.Timezone, next, last})
			}
			return table(a.stdout, []string{"id", "instance", "stop", "start", "timezone", "next", "last"}, rows)
		},
	}
}

func newScheduleRemoveCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME ID",
		Aliases: []string{"rm"},
		Short:   "Remove one of an instance's schedules",
		Example: `  labvm schedule remove alice-dev 3`,
		Args:    exactArgs(2, "NAME ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.Atoi(args[1])
			if err != nil || id < 1 {
				return usageErrorf("schedule id %q: want the number `labvm schedule list %s` shows", args[1], args[0])
			}
			if err := a.client().RemoveSchedule(cmd.Context(), args[0], id); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Schedule %d of %s removed\n", id, args[0])
			return nil
		},
	}
}
