package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/labvm/labvm/cmd/labvm/studio"
	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/network/sameuser"
	"github.com/spf13/cobra"
)

func newStudioCommand(a *app) *cobra.Command {
	var (
		browser bool
		port    int
	)
	cmd := &cobra.Command{
		Use:   "studio",
		Short: "Serve the web page of your instances on 127.0.0.1 (list, create, start, stop, open)",
		Long: `Serve labvm's web page from this process on http://127.0.0.1:PORT/ and print
the URL. It lists the instances and follows their states live, creates,
starts, stops, restarts and deletes them, shows each one's details and
operations, the quota, and opens your instances' applications (jupyter,
rstudio …) at http://APP.NAME.localhost:PORT/.

Everything the page does is asked of labvmd as you, exactly as this
command line would: the page has no rights of its own. Only you can use
the port: connections made by another user of this host are closed and
reported here. From a laptop, forward the port with ssh
(` + "`ssh -L PORT:127.0.0.1:PORT host`" + `); *.localhost names resolve to your
laptop's loopback, so the applications work through the same forward.
Runs until interrupted.`,
		Example: `  labvm studio
  labvm studio --port 8700 --browser`,
		GroupID: "instances",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if port < 0 || port > 65535 {
				return usageErrorf("--port %d: use 1-65535, or 0 for a free port", port)
			}
			// Ask labvmd first: a daemon that is down or refuses us is
			// better said here than on an empty page.
			if _, err := a.client().WhoAmI(ctx); err != nil {
				return err
			}
			srv, err := studio.New(studio.Config{
				Client:    a.client(),
				SSHConfig: a.studioSSHConfig,
				SSHKeys:   userSSHKeys,
				Logf:      func(format string, args ...any) { fmt.Fprintf(a.stderr, "labvm studio: "+format+"\n", args...) },
			})
			if err != nil {
				return err
			}
			ln, err := sameuser.Listen(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), sameuser.Options{
				Refused: func(r *sameuser.Refusal) { fmt.Fprintf(a.stderr, "labvm studio: %v\n", r) },
			})
			if err != nil {
				if errors.Is(err, syscall.EADDRINUSE) {
					return &api.Error{Code: api.CodeConflict, Message: fmt.Sprintf("port %d on 127.0.0.1 is already in use", port),
						Hint: fmt.Sprintf("pick another with --port (e.g. --port %d), or leave --port out for a free one", port+1)}
				}
				return fmt.Errorf("listen on 127.0.0.1:%d: %w", port, err)
			}
			url := fmt.Sprintf("http://127.0.0.1:%d/", ln.Addr().(*net.TCPAddr).Port)
			fmt.Fprintf(a.stdout, "labvm studio is at %s (Ctrl-C to stop)\n", url)
			if browser {
				a.announceBrowser(url)
			}
			return srv.Serve(ctx, ln)
		},
	}
	cmd.Flags().BoolVar(&browser, "browser", false, "also open the page in a browser ($BROWSER, else xdg-open)")
	cmd.Flags().IntVar(&port, "port", 0, "local port (default: a free one)")
	return cmd
}

// studioSSHConfig is `labvm ssh-config NAME` for the page: the instance's
// host key goes into labvm's known_hosts, and the block is returned.
func (a *app) studioSSHConfig(inst api.Instance) (string, error) {
	acc, err := a.sshAccess(inst)
	if err != nil {
		return "", err
	}
	return sshConfig(acc, inst), nil
}

// userSSHKeys are the public keys in ~/.ssh, offered by the create form.
func userSSHKeys() []studio.SSHKey {
	home, err := os.UserHomeDir()
	if err != nil {
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(home, ".ssh", "*.pub"))
	var out []studio.SSHKey
	for _, f := range files {
		if len(out) == 20 {
			break
		}
		st, err := os.Stat(f)
		if err != nil || !st.Mode().IsRegular() || st.Size() > 16<<10 {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		key := strings.TrimSpace(string(b))
		if key == "" || strings.ContainsAny(key, "\r\n") {
			continue
		}
		out = append(out, studio.SSHKey{File: "~/.ssh/" + filepath.Base(f), Key: key})
	}
	return out
}
