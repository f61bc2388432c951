package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newHostCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "host",
		Short:   "Host-wide actions (owners only)",
		GroupID: "daemon",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "shutdown",
		Short: "Shut every running instance down cleanly because the host is going down",
		Long: `Stops every running instance (ACPI shutdown, in parallel, bounded) and marks
it to start again when labvmd next starts, unless it was created with
--no-autostart. labvm-guests.service runs this on the host's way down.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.client().HostShutdown(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "Running instances shut down; they start again at the next labvmd start.")
			return nil
		},
	})
	return cmd
}
