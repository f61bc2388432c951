package daemon

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/images"
)

// pullProgressEvery throttles a pull's progress: each update wakes every
// client following the operation (a redraw) and may be written to bbolt.
const pullProgressEvery = 250 * time.Millisecond

// pullImage downloads an image over HTTP(S) and records it under a name.
// Everything that can be checked without the network is, before the
// operation starts, so bad input is a 400 and not a failed operation.
func (d *Daemon) pullImage(r *http.Request, c Caller) (response, error) {
	var req api.PullImageRequest
	if err := decode(r, &req); err != nil {
		return response{}, err
	}
	noteTarget(r, req.Name)
	if err := d.authorize(c, PermManageImages); err != nil {
		return response{}, err
	}
	if err := validateImageName(req.Name); err != nil {
		return response{}, err
	}
	if req.SHA256 != "" && req.ChecksumsURL != "" {
		return response{}, invalidf("give either sha256 or checksums_url, not both")
	}
	opts := images.PullOptions{URL: req.URL, SHA256: req.SHA256, ChecksumsURL: req.ChecksumsURL}
	if err := images.CheckPullOptions(opts); err != nil {
		return response{}, err
	}
	if err := d.imageNameFree(req.Name); err != nil {
		return response{}, err
	}
	op, err := d.ops.begin(api.OpImagePull, req.Name, "", c)
	if err != nil {
		return response{}, err
	}
	d.goOp(op, func(ctx context.Context, op *Op) error {
		op.Stage("Downloading", images.RedactURL(req.URL))
		meter := &pullMeter{op: op, now: time.Now}
		opts.Progress = meter.update
		opts.Downloaded = func() { op.Stage("Importing", "checksum, format, store") }
		imp, err := d.images.Pull(ctx, opts)
		if err != nil {
			return err
		}
		op.Stage("Recording", imp.Digest)
		return d.store.Update(func(tx *store.Tx) error {
			return tx.CreateImage(store.Image{
				Name: req.Name, Digest: imp.Digest, Path: imp.Path, SourceFormat: imp.SourceFormat,
				VirtualSize: imp.VirtualSize, FileSize: imp.FileSize,
				ImportedBy: c.Name, ImportedAt: time.Now().UTC(),
			})
		})
	})
	return accepted(op.Snapshot()), nil
}

// imageNameFree refuses a name already taken, before any work is done for
// it. CreateImage checks again at the end, for a race with another call.
func (d *Daemon) imageNameFree(name string) error {
	return d.store.View(func(tx *store.Tx) error {
		if _, err := tx.Image(name); err == nil {
			return &api.Error{Code: api.CodeAlreadyExists, Message: fmt.Sprintf("image %q already exists", name), Hint: "delete it first, or pick another name"}
		}
		return nil
	})
}

// pullMeter turns download progress into the Downloading stage's detail,
// the progress bar clients show. images.Puller never calls it
// concurrently, so it needs no lock.
type pullMeter struct {
	op  *Op
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
