package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
	"github.com/spf13/cobra"
)

func newWhoAmICommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "whoami",
		Short:   "Show your user, roles and rights as labvmd sees them",
		GroupID: "access-control",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			w, err := a.client().WhoAmI(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, w)
			}
			fmt.Fprintf(a.stdout, "User:   %s (uid %d)\n", w.User, w.UID)
			fmt.Fprintf(a.stdout, "Groups: %s\n", orDash(strings.Join(w.Groups, ", ")))
			role := w.Role
			if w.Note != "" {
				role += " (" + w.Note + ")"
			}
			fmt.Fprintf(a.stdout, "Role:   %s\n", role)
			fmt.Fprintln(a.stdout, "Rights:")
			for _, r := range w.Rights {
				fmt.Fprintf(a.stdout, "  %s\n", r)
			}
			return nil
		},
	}
}

func newRoleCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "role",
		Short:   "Assign roles (owner, contributor, reader) to users and @groups",
		GroupID: "access-control",
		Long: `Roles decide what a user may do:

  reader       list and show instances, images, sizes, quota
  contributor  also create, delete, start, stop and restart any instance
  owner        also manage roles, quotas, images and networks, create on behalf of others

Application access (exec, ssh, forward, open, console, jobs) is never granted by
a role: only an instance's own user has it. root is always an owner.
A principal is a user name, or @group for every member of a Unix group.`,
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:     "assign PRINCIPAL ROLE",
			Short:   "Give a user or @group a role",
			Example: "  sudo labvm role assign alice contributor\n  sudo labvm role assign @datasci reader",
			Args:    exactArgs(2, "PRINCIPAL and ROLE"),
			RunE: func(cmd *cobra.Command, args []string) error {
				r, err := a.client().AssignRole(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				if a.json() {
					return printJSON(a.stdout, r)
				}
				fmt.Fprintf(a.stdout, "%s is now %s\n", r.Principal, r.Role)
				return nil
			},
		},
		&cobra.Command{
			Use:     "remove PRINCIPAL ROLE",
			Aliases: []string{"rm"},
			Short:   "Take a role away",
			Args:    exactArgs(2, "PRINCIPAL and ROLE"),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := a.client().RemoveRole(cmd.Context(), args[0], args[1]); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%s is no longer %s\n", args[0], args[1])
				return nil
			},
		},
		&cobra.Command{
			Use:     "list",
			Aliases: []string{"ls"},
			Short:   "List role assignments",
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				list, err := a.client().Roles(cmd.Context())
				if err != nil {
					return err
				}
				if a.json() {
					return printJSON(a.stdout, list)
				}
				rows := make([][]string, 0, len(list))
				for _, r := range list {
					when := "-"
					if !r.AssignedAt.IsZero() {
						when = ago(r.AssignedAt)
					}
					rows = append(rows, []string{r.Principal, r.Role, orDash(r.AssignedBy), when})
				}
				return table(a.stdout, []string{"principal", "role", "assigned by", "assigned"}, rows)
			},
		},
	)
	return cmd
}

func newQuotaCommand(a *app) *cobra.Command {
	var (
		family    string
		total     bool
		inCluster bool
	)
	cmd := &cobra.Command{
		Use:     "quota",
		Short:   "Show vCPU cores used and allowed, per VM family and in total",
		GroupID: "access-control",
		Long: `Cores are taken when an instance is created and given back only when it is
deleted: stopping keeps them, so a stopped instance can always start again.

With --cluster, the quota of the lab cluster this host belongs to: its
limits count the instances of every host, and a create anywhere in the
cluster checks them when it reserves its name. A host's own quota (without
--cluster) applies too.`,
		Example: `  labvm quota
  labvm quota --cluster
  sudo labvm quota set --cluster --family standardBSFamily 8`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			get := a.client().Quota
			if inCluster {
				get = a.client().ClusterQuota
			}
			q, err := get(cmd.Context())
			if err != nil {
				return err
			}
			return a.printQuota(q)
		},
	}
	cmd.PersistentFlags().BoolVar(&inCluster, "cluster", false, "the cluster's quota (every host's instances count) rather than this host's")
	set := &cobra.Command{
		Use:     "set (--family FAMILY | --total) CORES",
		Short:   "Set a core limit (0 removes it); owners only",
		Example: "  sudo labvm quota set --family standardDSv2Family 24\n  sudo labvm quota set --total 64",
		Args:    exactArgs(1, "CORES"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (family == "") == !total {
				return usageErrorf("give exactly one of --family FAMILY or --total")
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 0 {
				return usageErrorf("CORES %q: want a whole number ≥ 0", args[0])
			}
			set := a.client().SetQuota
			if inCluster {
				set = a.client().SetClusterQuota
			}
			q, err := set(cmd.Context(), family, n)
			if err != nil {
				return err
			}
			return a.printQuota(q)
		},
	}
	set.Flags().StringVar(&family, "family", "", "VM family (see `labvm sizes`)")
	set.Flags().BoolVar(&total, "total", false, "the total (the host's, or with --cluster the cluster's)")
	cmd.AddCommand(set)
	return cmd
}

func (a *app) printQuota(q api.Quota) error {
	if a.json() {
		return printJSON(a.stdout, q)
	}
	limit := func(n int) string {
		if n == 0 {
			return "unlimited"
		}
		return strconv.Itoa(n)
	}
	rows := [][]string{{"(total)", strconv.Itoa(q.Total.Used), limit(q.Total.Limit)}}
	for _, f := range q.Families {
		rows = append(rows, []string{f.Family, strconv.Itoa(f.Used), limit(f.Limit)})
	}
	return table(a.stdout, []string{"family", "cores used", "limit"}, rows)
}

func newAuditCommand(a *app) *cobra.Command {
	var q client.AuditQuery
	cmd := &cobra.Command{
		Use:     "audit",
		Short:   "Show who did what, when, with what result (owners only)",
		GroupID: "access-control",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := a.client().Audit(cmd.Context(), q)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, list)
			}
			rows := make([][]string, 0, len(list))
			for _, e := range list {
				outcome := e.Outcome
				if e.Code != "" {
					outcome += " (" + e.Code + ")"
				}
				rows = append(rows, []string{e.Time.Local().Format("2006-01-02 15:04:05"), e.Caller, e.Action, orDash(e.Target), outcome})
			}
			return table(a.stdout, []string{"time", "caller", "action", "target", "outcome"}, rows)
		},
	}
	cmd.Flags().StringVar(&q.Since, "since", "", "only the last DURATION, e.g. 1h")
	cmd.Flags().StringVar(&q.Instance, "instance", "", "only calls on this instance")
	cmd.Flags().StringVar(&q.Caller, "caller", "", "only calls by this user")
	cmd.Flags().IntVar(&q.Limit, "limit", 0, "at most this many of the newest entries (default 1000)")
	return cmd
}
