package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/labvm/labvm/daemon/api"
	"github.com/spf13/cobra"
)

func newDatasetCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "dataset",
		Aliases: []string{"datasets"},
		Short:   "Manage datasets (host directories guests see read-only)",
		GroupID: "catalogue",
		Long: `A dataset is a directory on labvmd's host that owners declare under a name.
An instance created with --dataset NAME sees it read-only at /datasets/NAME,
mounted at every boot: nothing is copied into its disk, and neither the
guest nor its root can change, add or escape anything there (the host
refuses it). The datasets of an instance are fixed at create.`,
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "add NAME DIR",
			Short: "Declare a host directory as a dataset (owners only)",
			Example: `  sudo labvm dataset add imagenet /srv/datasets/imagenet
  labvm create bob-dev --size Standard_D2s_v3 --image debian-12 --dataset imagenet`,
			Args: exactArgs(2, "NAME and DIR"),
			RunE: func(cmd *cobra.Command, args []string) error {
				dir, err := filepath.Abs(args[1])
				if err != nil {
					return usageErrorf("%s: %v", args[1], err)
				}
				d, err := a.client().AddDataset(cmd.Context(), api.AddDatasetRequest{Name: args[0], Path: dir})
				if err != nil {
					return err
				}
				if a.json() {
					return printJSON(a.stdout, d)
				}
				fmt.Fprintf(a.stdout, "Dataset %s added: %s, read-only at %s in instances created with --dataset %s\n",
					d.Name, d.Path, "/datasets/"+d.Name, d.Name)
				return nil
			},
		},
		&cobra.Command{
			Use:     "list",
			Aliases: []string{"ls"},
			Short:   "List datasets and the instances created with each",
			Example: "  labvm dataset list\n  labvm dataset list -o json",
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				list, err := a.client().Datasets(cmd.Context())
				if err != nil {
					return err
				}
				if a.json() {
					return printJSON(a.stdout, list)
				}
				rows := make([][]string, 0, len(list))
				for _, d := range list {
					rows = append(rows, []string{d.Name, d.Path, orDash(strings.Join(d.UsedBy, ", ")), d.CreatedBy})
				}
				return table(a.stdout, []string{"name", "path", "instances", "added by"}, rows)
			},
		},
		&cobra.Command{
			Use:     "remove NAME",
			Aliases: []string{"rm", "delete"},
			Short:   "Forget a dataset no instance uses (owners only; the directory stays)",
			Example: "  sudo labvm dataset remove imagenet",
			Args:    exactArgs(1, "NAME"),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := a.client().RemoveDataset(cmd.Context(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "Dataset %s removed (its directory is untouched)\n", args[0])
				return nil
			},
		},
	)
	return cmd
}
