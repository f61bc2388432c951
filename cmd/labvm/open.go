package main

import (
	"fmt"
	"strings"

	"github.com/labvm/labvm/daemon/api"
	"github.com/spf13/cobra"
)

func newOpenCommand(a *app) *cobra.Command {
	var (
		browser bool
		local   int
	)
	cmd := &cobra.Command{
		Use:   "open NAME APP",
		Short: "Open an application of the instance (jupyter, jupyterlab, rstudio …) through a local forward",
		Long: `Forward a local port to the application's port in the guest, through labvmd,
and print the URL to open. Only the instance's own user may do this. The
applications come from the instance's image (defaults: jupyter on 8888 /tree,
jupyterlab on 8888 /lab, rstudio on 8787 /); the application itself must be
running in the guest: the data-science image (` + "`make ds-image`" + `) starts
Jupyter as the instance's user before the instance is Running. As with
` + "`labvm forward`" + `, only you can use the local port, so Jupyter needs no token;
its kernels and terminals (websockets) pass through. Runs until interrupted.`,
		Example: `  labvm open alice-ds jupyter --browser
  labvm open alice-dev jupyterlab --port 8888`,
		GroupID: "access",
		Args:    exactArgs(2, "NAME and APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			inst, err := a.client().Instance(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			app, err := findApp(inst, args[1])
			if err != nil {
				return err
			}
			return a.forward(cmd.Context(), inst.Name, local, app.Port, func(port int) {
				url := fmt.Sprintf("http://127.0.0.1:%d%s", port, app.Path)
				fmt.Fprintf(a.stdout, "%s of %s is at %s (Ctrl-C to stop)\n", app.Name, inst.Name, url)
				if browser {
					a.announceBrowser(url)
				}
			})
		},
	}
	cmd.Flags().BoolVar(&browser, "browser", false, "also open the URL in a browser ($BROWSER, else xdg-open)")
	cmd.Flags().IntVar(&local, "port", 0, "local port (default: a free one)")
	return cmd
}

func findApp(inst api.Instance, name string) (api.App, error) {
	var names []string
	for _, app := range inst.Apps {
		if app.Name == name {
			return app, nil
		}
		names = append(names, app.Name)
	}
	return api.App{}, &api.Error{Code: api.CodeInvalidArgument,
		Message: fmt.Sprintf("%s's image %s has no application %q", inst.Name, inst.Image, name),
		Hint:    "its applications: " + strings.Join(names, ", ")}
}
