package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/storage"
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
		Short: "Import a qcow2 or raw cloud image from a file you can read",
		Long: `Import a cloud image (qcow2, or raw which is converted to qcow2) under NAME.
labvm reads FILE with your own rights and sends its bytes to the daemon,
which never opens a path for you. The bytes received are verified against
--sha256 when given, stored read-only, and shared by every instance created
from the image.`,
		Example: "  labvm image import debian-12 ./debian-12-genericcloud-amd64.qcow2 --sha256 5f1c…",
		Args:    exactArgs(2, "NAME and FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.ImportImageRequest{Name: args[0], SHA256: sum}
			for _, s := range apps {
				app, err := parseApp(s)
				if err != nil {
					return err
				}
				req.Apps = append(req.Apps, app)
			}
			f, size, err := openImage(args[1])
			if err != nil {
				return err
			}
			defer f.Close()
			up := newByteMeter(a.stderr, isTerminal(a.stderr) && !a.json(), "Uploading", filepath.Base(args[1]), size)
			op, err := a.client().ImportImage(cmd.Context(), req, &countingReader{r: f, report: up.update}, size)
			up.stop()
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

// openImage opens an image file with the caller's own rights and returns
// its size. Only a regular file will do: a FIFO or a device has no size to
// announce and may never end. O_NONBLOCK keeps the open of a FIFO from
// hanging until the check refuses it.
func openImage(path string) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrPermission) {
		return nil, 0, &api.Error{Code: api.CodePermissionDenied, Message: fmt.Sprintf("you cannot read %s", path),
			Hint: "labvm reads the image with your own rights; copy it somewhere you can read, or ask its owner"}
	}
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, usageErrorf("%s is not a regular file", path)
	}
	if st.Size() == 0 {
		f.Close()
		return nil, 0, usageErrorf("%s is empty, not a disk image", path)
	}
	return f, st.Size(), nil
}

// countingReader reports the bytes read so far after every read.
type countingReader struct {
	r      io.Reader
	n      int64
	report func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.report(c.n)
	return n, err
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
				rows = append(rows, []string{i.Name, short(i.Digest), i.SourceFmt, storage.FormatIEC(i.VirtualSize), storage.FormatIEC(i.FileSize), fmt.Sprint(len(i.UsedBy)), ago(i.ImportedAt)})
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
	app, err := api.ParseApp(s)
	if err != nil {
		return api.App{}, usageErrorf("--app %q: %v", s, err)
	}
	return app, nil
}
