package main

import (
	"fmt"
	"io"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/spf13/cobra"
)

func newExecCommand(a *app) *cobra.Command {
	var (
		stdin   bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "exec NAME -- COMMAND [ARGS…]",
		Short: "Run a command in the instance through the QEMU guest agent",
		Long: `Run a command in the guest and print its output. labvm exits with the
command's exit code. The command runs as root in the guest, without a shell:
use sh -c '…' for pipes.`,
		Example: `  labvm exec alice-dev -- cat /etc/hostname
  echo hello | labvm exec -i alice-dev -- sh -c 'cat > /tmp/x'`,
		GroupID: "access",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 || cmd.ArgsLenAtDash() != 1 {
				return usageErrorf("usage: labvm exec NAME -- COMMAND [ARGS…]")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.ExecRequest{Command: args[1:], TimeoutSeconds: int(timeout.Seconds())}
			if stdin {
				b, err := io.ReadAll(io.LimitReader(a.stdin, 512<<10))
				if err != nil {
					return err
				}
				req.Stdin = b
			}
			res, err := a.client().Exec(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if a.json() {
				if err := printJSON(a.stdout, res); err != nil {
					return err
				}
			} else {
				if _, err := a.stdout.Write(res.Stdout); err != nil {
					return err
				}
				if _, err := a.stderr.Write(res.Stderr); err != nil {
					return err
				}
			}
			if res.Signal != 0 {
				// The shell convention, so scripts see a killed command fail.
				fmt.Fprintf(a.stderr, "labvm: command killed by signal %d\n", res.Signal)
				return &exitError{code: 128 + res.Signal}
			}
			if res.ExitCode != 0 {
				return &exitError{code: res.ExitCode}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&stdin, "stdin", "i", false, "pass labvm's standard input to the command (up to 512 KiB)")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (default: the daemon's, 5m)")
	return cmd
}
