package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/labvm/labvm/daemon/api"
	"github.com/spf13/cobra"
)

func newImageCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Aliases: []string{"images"},
		Short:   "Manage base images",
		GroupID: "catalogue",
	}
	cmd.AddCommand(newImageImportCommand(a), newImagePullCommand(a), newImageListCommand(a), newImageDeleteCommand(a))
	return cmd
}

func newImageImportCommand(a *app) *cobra.Command {
	var (
		sum  string
		apps []string
		wf   waitFlags
	)
	cmd := &cobra.Command{
		Use:   "import NAME FILE",
		Short: "Import a qcow2 or raw cloud image from a file on this host",
		Long: `Import a cloud image (qcow2, or raw which is converted to qcow2) under NAME.
The file is verified against --sha256 when given, copied into the daemon's
data dir read-only, and shared by every instance created from it.`,
		Example: "  labvm image import debian-12 ./debian-12-genericcloud-amd64.qcow2 --sha256 5f1c…",
		Args:    exactArgs(2, "NAME and FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := filepath.Abs(args[1])
			if err != nil {
				return err
			}
			req := api.ImportImageRequest{Name: args[0], Path: path, SHA256: sum}
			for _, s := range apps {
				app, err := parseApp(s)
				if err != nil {
					return err
				}
				req.Apps = append(req.Apps, app)
			}
			op, err := a.client().ImportImage(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.follow(cmd.Context(), op, wf, fmt.Sprintf("Image %s imported", args[0]))
		},
	}
	cmd.Flags().StringVar(&sum, "sha256", "", "expected SHA-256 of the file (hex)")
	cmd.Flags().StringArrayVar(&apps, "app", nil, "an application the image serves, NAME=PORT[/PATH] (repeatable; default jupyter, jupyterlab, rstudio)")
	wf.register(cmd)
	return cmd
}

func newImageListCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := a.client().Images(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, list)
			}
			if len(list) == 0 {
				fmt.Fprintln(a.stdout, "No images. Import one with `labvm image import NAME FILE`.")
				return nil
			}
			rows := make([][]string, 0, len(list))
			for _, i := range list {
				rows = append(rows, []string{i.Name, short(i.Digest), i.SourceFmt, bytesIEC(i.VirtualSize), bytesIEC(i.FileSize), fmt.Sprint(len(i.UsedBy)), ago(i.ImportedAt)})
			}
			return table(a.stdout, []string{"name", "sha256", "from", "virtual", "file", "instances", "imported"}, rows)
		},
	}
}

func newImageDeleteCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete an image no instance uses",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.client().DeleteImage(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Image %s deleted\n", args[0])
			return nil
		},
	}
}

// parseApp reads NAME=PORT[/PATH].
func parseApp(s string) (api.App, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return api.App{}, usageErrorf("--app %q: want NAME=PORT[/PATH], e.g. jupyter=8888/tree", s)
	}
	portText, path, _ := strings.Cut(rest, "/")
	port, err := strconv.Atoi(portText)
	if err != nil || port < 1 || port > 65535 {
		return api.App{}, usageErrorf("--app %q: port %q is not 1-65535", s, portText)
	}
	return api.App{Name: name, Port: port, Path: "/" + path}, nil
}
