package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/storage"
	"github.com/spf13/cobra"
)

func newHostsCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "hosts",
		Short: "List the hosts of this daemon's cluster: up or lost, capacity, instances",
		Long: `List the hosts of the lab cluster this labvmd belongs to, as each host last
published itself in etcd: up while its labvmd holds its lease, lost once the
lease expired (host down, cut off, or labvmd stopped). A lost host's
instances are kept and shown as on a lost host.`,
		Example: `  labvm hosts
  labvm hosts -o json
  labvm --host ssh://node3 hosts`,
		GroupID: "daemon",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			hosts, err := a.client().ClusterHosts(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, hosts)
			}
			rows := make([][]string, 0, len(hosts))
			for _, h := range hosts {
				rows = append(rows, []string{h.Name, string(h.State),
					fmt.Sprintf("%d/%d", h.Cores-h.CoresUsed, h.Cores),
					storage.FormatIEC(h.MemoryAvailable) + "/" + storage.FormatIEC(h.MemoryTotal),
					storage.FormatIEC(h.DiskFree), strconv.Itoa(h.Instances), ago(h.PublishedAt)})
			}
			return table(a.stdout, []string{"host", "state", "free cores", "free memory", "free disk", "instances", "published"}, rows)
		},
	}
}

// listCluster prints every instance of the cluster with its host.
func (a *app) listCluster(cmd *cobra.Command, mine bool, owner string) error {
	list, err := a.client().ClusterInstances(cmd.Context())
	if err != nil {
		return err
	}
	if mine || owner != "" {
		who := owner
		if mine {
			w, err := a.client().WhoAmI(cmd.Context())
			if err != nil {
				return err
			}
			who = w.User
		}
		kept := list[:0]
		for _, i := range list {
			if i.Owner == who {
				kept = append(kept, i)
			}
		}
		list = kept
	}
	if a.json() {
		return printJSON(a.stdout, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(a.stdout, "No instances in the cluster.")
		return nil
	}
	rows := make([][]string, 0, len(list))
	for _, i := range list {
		host := i.Host
		if i.HostState == api.HostLost {
			host += " (lost)"
		}
		rows = append(rows, []string{i.Name, host, string(i.State), i.Size, i.Owner})
	}
	return table(a.stdout, []string{"name", "host", "state", "size", "owner"}, rows)
}

// place asks the cluster, if the daemon is in one, where req goes; a
// host other than the daemon's becomes the daemon this command talks
// to, through ssh.
func (a *app) place(ctx context.Context, req api.CreateInstanceRequest) error {
	p, err := a.client().Placement(ctx, req.Size, req.Image)
	var ae *api.Error
	switch {
	case errors.As(err, &ae) && (ae.Code == api.CodeInsufficientResources || ae.Code == api.CodeInvalidArgument):
		return err // no host fits, or bad input
	case err != nil:
		// In no cluster (NotFound), no right to read it, or etcd away:
		// the daemon's own create judges and says why.
		return nil
	case p.Local:
		fmt.Fprintf(a.stderr, "Placed on %s, this host (%s)\n", p.Host, p.Why)
		return nil
	}
	t, err := client.ParseSSHURL(p.SSH)
	if err != nil {
		return fmt.Errorf("the cluster placed %s on %s, whose published address is unusable: %w", req.Name, p.Host, err)
	}
	t.Socket = p.Socket
	fmt.Fprintf(a.stderr, "Placed on %s (%s); creating it there through %s\n", p.Host, p.Why, t.URL())
	a.close()
	a.cli, a.remote = nil, &t
	return nil
}
