package library

import (
	"context"
	"fmt"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/images"
)

// The steps of image operations.
var (
	StepDownload = ops.Step{ID: "download", Title: "Downloading"}
	StepReceive  = ops.Step{ID: "receive", Title: "Receiving"}
	StepImport   = ops.Step{ID: "import", Title: "Importing"}
	StepRecord   = ops.Step{ID: "record", Title: "Recording"}
)

// pullProgressEvery throttles a pull's progress: each update wakes every
// client following the operation (a redraw) and may be written to bbolt.
const pullProgressEvery = 250 * time.Millisecond

// Pull downloads an image over HTTP(S) and records it under a name.
// Everything that can be checked without the network is, before the
// operation starts, so bad input is a 400 and not a failed operation.
func (l *Library) Pull(c authz.Caller, req api.PullImageRequest) (store.Operation, error) {
	var response store.Operation
	if err := validateImageName(req.Name); err != nil {
		return response, err
	}
	if req.SHA256 != "" && req.ChecksumsURL != "" {
		return response, errdefs.Invalidf("give either sha256 or checksums_url, not both")
	}
	opts := images.PullOptions{URL: req.URL, SHA256: req.SHA256, ChecksumsURL: req.ChecksumsURL}
	if err := images.CheckPullOptions(opts); err != nil {
		return response, err
	}
	if err := l.imageNameFree(req.Name); err != nil {
		return response, err
	}
	op, err := l.ops.Begin(api.OpImagePull, req.Name, "", ops.Who{Name: c.Name, UID: c.UID})
	if err != nil {
		return response, err
	}
	snap := op.Snapshot()
	l.ops.Go(op, func(ctx context.Context, op *ops.Op) error {
		op.Stage(StepDownload, images.RedactURL(req.URL))
		meter := &pullMeter{op: op, now: time.Now}
		opts.Progress = meter.update
		opts.Downloaded = func() { op.Stage(StepImport, "checksum, format, store") }
		imp, err := l.files.Pull(ctx, opts)
		if err != nil {
			return err
		}
		op.Stage(StepRecord, imp.Digest)
		return l.store.Update(func(tx *store.Tx) error {
			return tx.CreateImage(store.Image{
				Name: req.Name, Digest: imp.Digest, Path: imp.Path, SourceFormat: imp.SourceFormat,
				VirtualSize: imp.VirtualSize, FileSize: imp.FileSize,
				ImportedBy: c.Name, ImportedAt: time.Now().UTC(),
			})
		})
	})
	return snap, nil
}

// imageNameFree refuses a name already taken, before any work is done for
// it. CreateImage checks again at the end, for a race with another call.
func (l *Library) imageNameFree(name string) error {
	return l.store.View(func(tx *store.Tx) error {
		if _, err := tx.Image(name); err == nil {
			return errdefs.New(errdefs.ErrAlreadyExists, "delete it first, or pick another name", "image %q already exists", name)
		}
		return nil
	})
}

// pullMeter turns download progress into the Downloading stage's detail,
// the progress bar clients show. images.Puller never calls it
// concurrently, so it needs no lock.
type pullMeter struct {
	op  *ops.Op
	now func() time.Time
	// start and resumed are the time and byte count of the first report:
	// bytes kept from an earlier attempt must not inflate the rate.
	start   time.Time
	resumed int64
	started bool
	last    time.Time
}

func (m *pullMeter) update(done, total int64) {
	now := m.now()
	if !m.started {
		m.start, m.resumed, m.started = now, done, true
	}
	if now.Sub(m.last) < pullProgressEvery && done != total {
		return
	}
	m.last = now
	rate := 0.0
	if el := now.Sub(m.start).Seconds(); el > 0 {
		rate = float64(done-m.resumed) / el
	}
	m.op.Progress(formatPull(done, total, rate))
}

// formatPull renders "123.4 MiB / 512.0 MiB (24%) 45.6 MiB/s", leaving
// out what is unknown: the total (-1) or the rate (0).
func formatPull(done, total int64, perSec float64) string {
	s := iec(float64(done))
	if total > 0 {
		s += fmt.Sprintf(" / %s (%d%%)", iec(float64(total)), done*100/total)
	}
	if perSec > 0 {
		s += " " + iec(perSec) + "/s"
	}
	return s
}

// iec formats a byte count with binary units and one decimal.
func iec(n float64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%.0f B", n)
	}
	i := -1
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", n, units[i])
}
