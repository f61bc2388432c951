package main

import (
	"fmt"

	"github.com/labvm/labvm/daemon/api"
	"github.com/spf13/cobra"
)

func newImagePullCommand(a *app) *cobra.Command {
	var (
		req api.PullImageRequest
		wf  waitFlags
	)
	cmd := &cobra.Command{
		Use:   "pull NAME URL",
		Short: "Download a qcow2 or raw cloud image over HTTP(S)",
		Long: `Download a cloud image (qcow2, or raw which is converted to qcow2) from URL
and store it under NAME. The daemon does the download, showing its progress;
an interrupted download resumes, and pulling the same URL again after a
failure continues where it stopped. The file is verified against --sha256,
or against the digest a SHA256SUMS file (--checksums) lists for the URL's
file name, before anything is stored.`,
		Example: `  labvm image pull noble https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img \
      --checksums https://cloud-images.ubuntu.com/noble/current/SHA256SUMS
  labvm image pull tiny http://mirror.lab.example/tiny.qcow2 --sha256 5f1c…`,
		Args: exactArgs(2, "NAME and URL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.SHA256 != "" && req.ChecksumsURL != "" {
				return usageErrorf("give --sha256 or --checksums, not both")
			}
			req.Name, req.URL = args[0], args[1]
			op, err := a.client().PullImage(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.follow(cmd.Context(), op, wf, fmt.Sprintf("Image %s pulled", args[0]))
		},
	}
	cmd.Flags().StringVar(&req.SHA256, "sha256", "", "expected SHA-256 of the file (hex)")
	cmd.Flags().StringVar(&req.ChecksumsURL, "checksums", "", "URL of a SHA256SUMS file listing the image's file name")
	wf.register(cmd)
	return cmd
}
