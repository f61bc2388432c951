// Package library owns the host's named images: their records, importing
// and pulling them into the content-addressed files of package images,
// the applications each image serves, and refusing to delete an image an
// instance uses.
//
// It knows nothing of HTTP or of who may call it.
package library

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/images"
	"github.com/labvm/labvm/storage"
)

// validateImageName allows names like debian-12, ubuntu-24.04, tiny.
func validateImageName(name string) error {
	if len(name) < 1 || len(name) > 64 {
		return errdefs.Invalidf("image name %q: use 1-64 characters", name)
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '.' || c == '_')
		if !ok {
			return errdefs.Invalidf("image name %q: character %q not allowed; use a-z, 0-9, '-', '.', '_', starting with a letter or digit", name, c)
		}
	}
	return nil
}

// Library is the image engine.
type Library struct {
	store *store.Store
	files *images.Catalogue
	ops   *ops.Engine
	log   *slog.Logger
}

// New returns a library over the records in st and the files in files.
func New(st *store.Store, files *images.Catalogue, o *ops.Engine, log *slog.Logger) *Library {
	return &Library{store: st, files: files, ops: o, log: log}
}

func (l *Library) apiImage(img store.Image, users []string) api.Image {
	return api.Image{
		Name: img.Name, Digest: img.Digest, Format: "qcow2", SourceFmt: img.SourceFormat,
		VirtualSize: img.VirtualSize, FileSize: img.FileSize,
		ImportedBy: img.ImportedBy, ImportedAt: img.ImportedAt, UsedBy: users,
		Apps: WireApps(AppsOf(img)),
	}
}

// imageUsers maps image name to the instances using it.
func imageUsers(tx *store.Tx) (map[string][]string, error) {
	list, err := tx.Instances()
	users := map[string][]string{}
	for _, inst := range list {
		users[inst.Image] = append(users[inst.Image], inst.Name)
	}
	return users, err
}

// List is every image with the instances using it.
func (l *Library) List() ([]api.Image, error) {
	out := []api.Image{}
	err := l.store.View(func(tx *store.Tx) error {
		imgs, err := tx.Images()
		if err != nil {
			return err
		}
		users, err := imageUsers(tx)
		for _, img := range imgs {
			out = append(out, l.apiImage(img, users[img.Name]))
		}
		return err
	})
	return out, err
}

// Get is one image.
func (l *Library) Get(name string) (api.Image, error) {
	var out api.Image
	err := l.store.View(func(tx *store.Tx) error {
		img, err := tx.Image(name)
		if err != nil {
			return fmt.Errorf("image %q: %w", name, err)
		}
		users, err := imageUsers(tx)
		out = l.apiImage(img, users[img.Name])
		return err
	})
	return out, err
}

// Import stores an image the caller streams as body (size bytes) under
// a name. The daemon never opens a path on the caller's behalf: what the
// caller could read, it sends. The operation reads the body; Import
// returns once it has (or ctx, the request, ended), so the caller's
// connection is answered after the last byte.
func (l *Library) Import(ctx context.Context, c authz.Caller, req api.ImportImageRequest, body io.Reader, size int64) (store.Operation, error) {
	var response store.Operation
	if err := validateImageName(req.Name); err != nil {
		return response, err
	}
	if req.SHA256 != "" {
		if err := images.CheckDigest(req.SHA256); err != nil {
			return response, errdefs.Invalidf("--sha256: %v", err)
		}
	}
	apps, err := validateApps(req.Apps)
	if err != nil {
		return response, err
	}
	if size <= 0 {
		return response, errdefs.Invalidf("an image upload needs a Content-Length (got %d)", size)
	}
	if capa, err := storage.FilesystemCapacity(l.files.Dir); err == nil && size > capa.Free {
		return response, errdefs.New(errdefs.ErrInsufficientResources, "free space in the data dir (delete unused images or instances)",
			"the image is %s; only %s is free for images", storage.FormatSize(size), storage.FormatSize(capa.Free))
	}
	if err := l.imageNameFree(req.Name); err != nil {
		return response, err
	}
	op, err := l.ops.Begin(api.OpImageImport, req.Name, "", ops.Who{Name: c.Name, UID: c.UID})
	if err != nil {
		return response, err
	}
	snap := op.Snapshot()
	up := &uploadBody{r: body, done: make(chan struct{})}
	l.ops.Go(op, func(ctx context.Context, op *ops.Op) error {
		defer up.finish()
		op.Stage(StepReceive, fmt.Sprintf("%s from %s", storage.FormatSize(size), c.Name))
		meter := &pullMeter{op: op, now: time.Now}
		imp, err := l.files.Import(ctx, up, images.ImportOptions{SHA256: req.SHA256, Size: size, Progress: func(n int64) {
			meter.update(n, size)
			if n == size {
				op.Stage(StepImport, "checksum, format, store")
			}
		}})
		if err != nil {
			return err
		}
		op.Stage(StepRecord, imp.Digest)
		return l.store.Update(func(tx *store.Tx) error {
			return tx.CreateImage(store.Image{
				Name: req.Name, Digest: imp.Digest, Path: imp.Path, SourceFormat: imp.SourceFormat,
				VirtualSize: imp.VirtualSize, FileSize: imp.FileSize,
				ImportedBy: c.Name, ImportedAt: time.Now().UTC(), Apps: apps,
			})
		})
	})
	select {
	case <-up.done:
	case <-ctx.Done():
		// The client went away; the operation's read fails and cleans up.
	}
	return snap, nil
}

// uploadBody hands a request body to an operation and tells the handler
// when the operation is done reading it.
type uploadBody struct {
	r    io.Reader
	once sync.Once
	done chan struct{}
}

func (b *uploadBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil {
		b.finish()
	}
	return n, err
}

func (b *uploadBody) finish() { b.once.Do(func() { close(b.done) }) }

// Delete removes an image unless an instance uses it; the file goes
// only when no other name points at the same content.
func (l *Library) Delete(name string) error {
	var removeDigest string
	err := l.store.Update(func(tx *store.Tx) error {
		img, err := tx.Image(name)
		if errors.Is(err, store.ErrNotFound) {
			return errdefs.New(errdefs.ErrNotFound, "`labvm image list` shows the images", "image %q not found", name)
		}
		if err != nil {
			return err
		}
		users, err := imageUsers(tx)
		if err != nil {
			return err
		}
		if u := users[name]; len(u) > 0 {
			return fmt.Errorf("image %q is used by %s; delete those instances first: %w", name, strings.Join(u, ", "), errdefs.ErrConflict)
		}
		imgs, err := tx.Images()
		if err != nil {
			return err
		}
		removeDigest = img.Digest
		for _, other := range imgs {
			if other.Name != name && other.Digest == img.Digest {
				removeDigest = ""
			}
		}
		return tx.DeleteImage(name)
	})
	if err != nil {
		return err
	}
	if removeDigest != "" {
		if err := l.files.Remove(removeDigest); err != nil {
			l.log.Warn("remove image file", "image", name, "error", err)
		}
	}
	return nil
}

// Record is an image's stored record.
func (l *Library) Record(name string) (store.Image, error) {
	var img store.Image
	err := l.store.View(func(tx *store.Tx) error {
		var err error
		img, err = tx.Image(name)
		return err
	})
	return img, err
}
