package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newLogsCommand(a *app) *cobra.Command {
	var setup, startup, cloudInit, raw bool
	cmd := &cobra.Command{
		Use:   "logs NAME [--setup | --startup | --cloud-init]",
		Short: "Show an instance's serial console log, its setup or startup script's output, or cloud-init's",
		Example: `  labvm logs alice-dev             # the serial console: boot messages, cloud-init
  labvm logs alice-dev --setup     # what the setup script printed
  labvm logs alice-dev --cloud-init  # cloud-init-output.log of the guest`,
		GroupID: "access",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind := "console"
			n := 0
			for _, k := range []struct {
				set  bool
				name string
			}{{setup, "setup"}, {startup, "startup"}, {cloudInit, "cloud-init"}} {
				if k.set {
					kind = k.name
					n++
				}
			}
			if n > 1 {
				return usageErrorf("give one of --setup, --startup and --cloud-init")
			}
			logs, err := a.client().Logs(cmd.Context(), args[0], kind)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, logs)
			}
			if logs.Truncated {
				fmt.Fprintln(a.stderr, "(only the last MiB is shown)")
			}
			content := logs.Content
			if !raw && isTerminal(a.stdout) {
				// What the guest printed goes to the user's terminal: its
				// escapes must not reach it (set a title, rewrite the
				// screen, answer back). --raw passes them.
				content = safeLines(content)
			}
			fmt.Fprint(a.stdout, content)
			if logs.Content != "" && !strings.HasSuffix(logs.Content, "\n") {
				fmt.Fprintln(a.stdout)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&setup, "setup", false, "the setup script's output")
	cmd.Flags().BoolVar(&startup, "startup", false, "the startup script's output (latest boot)")
	cmd.Flags().BoolVar(&cloudInit, "cloud-init", false, "cloud-init's output (/var/log/cloud-init-output.log; live while the guest runs, else its last boot's)")
	cmd.Flags().BoolVar(&raw, "raw", false, "print the guest's bytes as they are, terminal escapes included")
	return cmd
}
