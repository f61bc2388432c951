// Command labvm is the command line of labvm: it talks to labvmd over its
// Unix socket, where the caller's Unix user is who they are.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
	"github.com/spf13/cobra"
)

// app carries what every command needs: global flags and the streams.
type app struct {
	socket string
	output string
	stdout io.Writer
	stderr io.Writer
	stdin  io.Reader
}

func (a *app) client() *client.Client { return client.New(a.socket) }

func newRootCommand(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "labvm",
		Short: "Personal development VMs on your lab's own hosts",
		Long: `labvm manages compute instances: personal development VMs booted from cloud
images by labvmd on this host. Each instance has a fixed size, a 120 GiB OS
disk, a private address on an isolated network, and keeps its disk when
stopped.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if a.output != "table" && a.output != "json" {
				return usageErrorf("-o %q: use table or json", a.output)
			}
			return nil
		},
	}
	defSocket := os.Getenv("LABVM_SOCKET")
	if defSocket == "" {
		defSocket = client.DefaultSocket
	}
	root.PersistentFlags().StringVar(&a.socket, "socket", defSocket, "labvmd's API socket (env LABVM_SOCKET)")
	root.PersistentFlags().StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	root.AddGroup(
		&cobra.Group{ID: "instances", Title: "Instances:"},
		&cobra.Group{ID: "access", Title: "Working in an instance:"},
		&cobra.Group{ID: "catalogue", Title: "Images and sizes:"},
		&cobra.Group{ID: "access-control", Title: "Who may do what:"},
		&cobra.Group{ID: "daemon", Title: "Daemon and operations:"},
	)
	root.AddCommand(
		newCreateCommand(a), newShowCommand(a), newListCommand(a),
		newStartCommand(a), newStopCommand(a), newRestartCommand(a), newDeleteCommand(a),
		newExecCommand(a), newJobCommand(a), newLogsCommand(a), newOpenCommand(a), newStudioCommand(a), newSSHCommand(a), newSSHConfigCommand(a),
		newTunnelCommand(a), newForwardCommand(a), newConsoleCommand(a),
		newImageCommand(a), newSizesCommand(a), newNetworkCommand(a), newDatasetCommand(a),
		newResizeCommand(a),
		newInfoCommand(a), newWaitCommand(a), newOperationsCommand(a), newEventsCommand(a), newHostCommand(a),
		newWhoAmICommand(a), newRoleCommand(a), newQuotaCommand(a), newAuditCommand(a),
		newDoctorCommand(a),
	)
	return root
}

// usageError is bad command-line input, found before calling the daemon.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitError carries a specific exit code (exec passes the guest's through).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	a := &app{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin}
	err := newRootCommand(a).ExecuteContext(ctx)
	stop()
	os.Exit(report(a.stderr, err))
}

// report prints err the way users read it — message, then what to do —
// and returns the exit code: 0 ok, 1 failed, 2 bad usage, or the code a
// guest command exited with.
func report(w io.Writer, err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ae *api.Error
	var ue *usageError
	switch {
	case errors.As(err, &ae):
		fmt.Fprintf(w, "Error: %s\n", ae.Message)
		if ae.Hint != "" {
			fmt.Fprintf(w, "Hint: %s\n", ae.Hint)
		}
	case errors.As(err, &ue):
		fmt.Fprintf(w, "Error: %s\n", ue.msg)
		fmt.Fprintln(w, "Hint: run `labvm --help` or `labvm COMMAND --help`")
		return 2
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(w, "Interrupted.")
		return 130
	default:
		fmt.Fprintf(w, "Error: %s\n", err)
	}
	return 1
}
