package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// qemuImgBinary is looked up in PATH, where Debian's qemu-utils puts it.
const qemuImgBinary = "qemu-img"

// DiskInfo is the subset of `qemu-img info` that labvm acts on.
type DiskInfo struct {
	Format        string
	VirtualSize   int64
	ActualSize    int64
	BackingFile   string
	BackingFormat string
	// DataFile is set when a qcow2 image keeps its guest data in an external
	// file; importers must refuse such images because the path points
	// anywhere on the host.
	DataFile string
}

// qemuImgInfo mirrors the JSON emitted by `qemu-img info --output=json`.
type qemuImgInfo struct {
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	ActualSize      int64  `json:"actual-size"`
	BackingFilename string `json:"backing-filename"`
	BackingFormat   string `json:"backing-filename-format"`
	FormatSpecific  struct {
		Data struct {
			DataFile string `json:"data-file"`
		} `json:"data"`
	} `json:"format-specific"`
}

// Inspect reports the format and sizes of the image at path. --force-share
// lets it read images that a running QEMU holds locked, which is the common
// case for overlays of live instances.
func Inspect(ctx context.Context, path string) (DiskInfo, error) {
	out, err := runQemuImg(ctx, "info", "--output=json", "--force-share", "--", path)
	if err != nil {
		return DiskInfo{}, fmt.Errorf("inspect %s: %w", path, err)
	}
	var raw qemuImgInfo
	if err := json.Unmarshal(out, &raw); err != nil {
		return DiskInfo{}, fmt.Errorf("inspect %s: decode qemu-img output: %w", path, err)
	}
	return DiskInfo{
		Format:        raw.Format,
		VirtualSize:   raw.VirtualSize,
		ActualSize:    raw.ActualSize,
		BackingFile:   raw.BackingFilename,
		BackingFormat: raw.BackingFormat,
		DataFile:      raw.FormatSpecific.Data.DataFile,
	}, nil
}

// ConvertOptions describes one `qemu-img convert` run. Both formats are
// mandatory: letting qemu-img probe the source format is how a raw image
// that happens to start with a qcow2 header turns into a host file read.
type ConvertOptions struct {
	Source       string
	SourceFormat string
	Dest         string
	DestFormat   string
}

// Convert copies Source into Dest, changing the container format. Dest is
// created or truncated by qemu-img.
func Convert(ctx context.Context, opts ConvertOptions) error {
	if opts.Source == "" || opts.Dest == "" || opts.SourceFormat == "" || opts.DestFormat == "" {
		return fmt.Errorf("convert %s to %s: source, dest and both formats are required", opts.Source, opts.Dest)
	}
	_, err := runQemuImg(ctx, "convert", "-f", opts.SourceFormat, "-O", opts.DestFormat, "--", opts.Source, opts.Dest)
	if err != nil {
		return fmt.Errorf("convert %s (%s) to %s (%s): %w", opts.Source, opts.SourceFormat, opts.Dest, opts.DestFormat, err)
	}
	return nil
}

// runQemuImg runs qemu-img and folds its stderr into the error, because
// qemu-img's exit status alone never says what went wrong.
func runQemuImg(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, qemuImgBinary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("qemu-img %s: %w", args[0], ctxErr)
		}
		msg := strings.TrimSpace(stderr.String())
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) && msg != "" {
			return nil, fmt.Errorf("qemu-img %s: %w: %s", args[0], err, msg)
		}
		return nil, fmt.Errorf("qemu-img %s: %w", args[0], err)
	}
	return stdout.Bytes(), nil
}
