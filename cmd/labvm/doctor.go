package main

import (
	"fmt"

	"github.com/labvm/labvm/daemon/api"
	"github.com/spf13/cobra"
)

func newDoctorCommand(a *app) *cobra.Command {
	var req api.DoctorRequest
	cmd := &cobra.Command{
		Use:     "doctor",
		Short:   "Check the state store against libvirt and the data dir (owners)",
		GroupID: "daemon",
		Long: `doctor compares labvmd's records with libvirt's domains and the files in its
data dir, and reports what disagrees: labvm domains no record owns, orphan
files and directories in instances/ and images/, records whose disk or domain
is missing, address allocations no instance holds, interrupted writes
or downloads, and nftables tables no running labvmd owns (a dead daemon's
table; a bridge-family one can cut every bridge's guests off), each with
the nft command that deletes it. It changes nothing unless asked:

  --repair   fixes what is safe: destroys unknown domains of this data dir,
             removes orphan directories and partial files, releases orphan
             addresses, deletes a firewall table whose owner is gone and
             whose guests no longer run. It never removes what --rebuild
             could recover.
  --rebuild  recovers instance and image records from the manifests kept
             next to each disk, after the database was lost or corrupt
             (move a corrupt labvm.db aside and start labvmd first). It
             never overwrites an existing record.`,
		Example: "  sudo labvm doctor\n  sudo labvm doctor --repair\n  sudo labvm doctor --rebuild -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c := a.client()
			var (
				r   api.DoctorReport
				err error
			)
			if req.Repair || req.Rebuild {
				r, err = c.RunDoctor(cmd.Context(), req)
			} else {
				r, err = c.Doctor(cmd.Context())
			}
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, r)
			}
			return a.printDoctor(r, req.Repair || req.Rebuild)
		},
	}
	cmd.Flags().BoolVar(&req.Repair, "repair", false, "fix what is safe and say what was done")
	cmd.Flags().BoolVar(&req.Rebuild, "rebuild", false, "recover records from the manifests in the data dir")
	return cmd
}

func (a *app) printDoctor(r api.DoctorReport, changed bool) error {
	if !changed {
		return a.printFindings(r.Findings, "No problems found.")
	}
	if len(r.Actions) == 0 {
		fmt.Fprintln(a.stdout, "Nothing to do.")
	}
	for _, act := range r.Actions {
		fmt.Fprintf(a.stdout, "Done: %s\n", act)
	}
	fmt.Fprintln(a.stdout)
	return a.printFindings(r.Remaining, "No problems remain.")
}

func (a *app) printFindings(list []api.Finding, none string) error {
	if len(list) == 0 {
		fmt.Fprintln(a.stdout, none)
		return nil
	}
	rows := make([][]string, 0, len(list))
	for _, f := range list {
		rows = append(rows, []string{f.Kind, f.Target, f.Detail, f.Fix})
	}
	return table(a.stdout, []string{"kind", "target", "detail", "fix"}, rows)
}
