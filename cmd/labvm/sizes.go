package main

import (
	"fmt"

	"github.com/labvm/labvm/storage"
	"github.com/spf13/cobra"
)

func newSizesCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "sizes",
		Short:   "List the VM sizes",
		GroupID: "catalogue",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sizes, err := a.client().Sizes(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, sizes)
			}
			rows := make([][]string, 0, len(sizes))
			for _, s := range sizes {
				rows = append(rows, []string{s.Name, fmt.Sprint(s.VCPUs), storage.FormatIEC(int64(s.MemoryMiB) << 20), s.Family})
			}
			return table(a.stdout, []string{"name", "vcpus", "memory", "family"}, rows)
		},
	}
}

func newInfoCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "info",
		Short:   "Show the daemon's details and who you are to it",
		GroupID: "daemon",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			info, err := a.client().Info(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, info)
			}
			fmt.Fprintf(a.stdout, "Daemon:      labvmd %s on %s\n", info.Version, info.Host)
			fmt.Fprintf(a.stdout, "Reached at:  %s\n", a.targetName())
			fmt.Fprintf(a.stdout, "You:         %s (uid %d)\n", info.Caller, info.CallerUID)
			fmt.Fprintf(a.stdout, "Accelerator: %s (%s)\n", info.Accelerator, info.AccelReason)
			fmt.Fprintf(a.stdout, "Libvirt:     %s\n", info.LibvirtURI)
			fmt.Fprintf(a.stdout, "Data dir:    %s\n", info.DataDir)
			fmt.Fprintf(a.stdout, "Instances:   %d\n", info.Instances)
			if c := info.Cluster; c != nil {
				state := "connected"
				if !c.Connected {
					state = "not connected to etcd"
					if c.Error != "" {
						state += ": " + c.Error
					}
				}
				fmt.Fprintf(a.stdout, "Cluster:     %s, as host %s (%s)\n", c.Name, c.Host, safeText(state))
			}
			return nil
		},
	}
}
