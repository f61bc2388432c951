package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/images"
	"github.com/labvm/labvm/storage"
)

// validateImageName allows names like debian-12, ubuntu-24.04, tiny.
func validateImageName(name string) error {
	if len(name) < 1 || len(name) > 64 {
		return invalidf("image name %q: use 1-64 characters", name)
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '.' || c == '_')
		if !ok {
			return invalidf("image name %q: character %q not allowed; use a-z, 0-9, '-', '.', '_', starting with a letter or digit", name, c)
		}
	}
	return nil
}

func (d *Daemon) apiImage(img store.Image, users []string) api.Image {
	return api.Image{
		Name: img.Name, Digest: img.Digest, Format: "qcow2", SourceFmt: img.SourceFormat,
		VirtualSize: img.VirtualSize, FileSize: img.FileSize,
		ImportedBy: img.ImportedBy, ImportedAt: img.ImportedAt, UsedBy: users,
		Apps: apiApps(appsOf(img)),
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

func (d *Daemon) listImages(r *http.Request, c Caller) (response, error) {
	if err := d.authorize(c, PermRead); err != nil {
		return response{}, err
	}
	out := []api.Image{}
	err := d.store.View(func(tx *store.Tx) error {
		imgs, err := tx.Images()
		if err != nil {
			return err
		}
		users, err := imageUsers(tx)
		for _, img := range imgs {
			out = append(out, d.apiImage(img, users[img.Name]))
		}
		return err
	})
	return ok(out), err
}

func (d *Daemon) getImage(r *http.Request, c Caller) (response, error) {
	if err := d.authorize(c, PermRead); err != nil {
		return response{}, err
	}
	var out api.Image
	err := d.store.View(func(tx *store.Tx) error {
		img, err := tx.Image(r.PathValue("name"))
		if err != nil {
			return fmt.Errorf("image %q: %w", r.PathValue("name"), err)
		}
		users, err := imageUsers(tx)
		out = d.apiImage(img, users[img.Name])
		return err
	})
	return ok(out), err
}

// importImage receives an image the client streams as the request body
// (see api.ImportImageRequest) and stores it. The daemon never opens a
// path for the caller: the client reads the file with the caller's own
// rights. The answer waits until the body has been read to its end, as the
// server closes it once the handler returns; the operation then finishes
// the checks and the store. An upload that breaks off fails the operation
// and leaves nothing behind.
func (d *Daemon) importImage(r *http.Request, c Caller) (response, error) {
	if ct := r.Header.Get("Content-Type"); ct != api.ImportContentType {
		return response{}, invalidf("send the image itself as the request body, Content-Type %s (got %q); the daemon does not read files by path", api.ImportContentType, ct)
	}
	req, err := api.ParseImportQuery(r.URL.Query())
	if err != nil {
		return response{}, err
	}
	noteTarget(r, req.Name)
	if err := d.authorize(c, PermManageImages); err != nil {
		return response{}, err
	}
	if err := validateImageName(req.Name); err != nil {
		return response{}, err
	}
	if req.SHA256 != "" {
		if err := images.CheckDigest(req.SHA256); err != nil {
			return response{}, invalidf("--sha256: %v", err)
		}
	}
	apps, err := validateApps(req.Apps)
	if err != nil {
		return response{}, err
	}
	size := r.ContentLength
	if size <= 0 {
		return response{}, invalidf("an image upload needs a Content-Length (got %d)", size)
	}
	if capa, err := storage.FilesystemCapacity(d.images.Dir); err == nil && size > capa.Free {
		return response{}, &api.Error{Code: api.CodeInsufficientResources,
			Message: fmt.Sprintf("the image is %s; only %s is free for images", storage.FormatSize(size), storage.FormatSize(capa.Free)),
			Hint:    "free space in the data dir (delete unused images or instances)"}
	}
	if err := d.imageNameFree(req.Name); err != nil {
		return response{}, err
	}
	op, err := d.ops.begin(api.OpImageImport, req.Name, "", c)
	if err != nil {
		return response{}, err
	}
	body := &uploadBody{r: r.Body, done: make(chan struct{})}
	d.goOp(op, func(ctx context.Context, op *Op) error {
		defer body.finish()
		op.Stage("Receiving", fmt.Sprintf("%s from %s", storage.FormatSize(size), c.Name))
		meter := &pullMeter{op: op, now: time.Now}
		imp, err := d.images.Import(ctx, body, images.ImportOptions{SHA256: req.SHA256, Size: size, Progress: func(n int64) {
			meter.update(n, size)
			if n == size {
				op.Stage("Importing", "checksum, format, store")
			}
		}})
		if err != nil {
			return err
		}
		op.Stage("Recording", imp.Digest)
		return d.store.Update(func(tx *store.Tx) error {
			return tx.CreateImage(store.Image{
				Name: req.Name, Digest: imp.Digest, Path: imp.Path, SourceFormat: imp.SourceFormat,
				VirtualSize: imp.VirtualSize, FileSize: imp.FileSize,
				ImportedBy: c.Name, ImportedAt: time.Now().UTC(), Apps: apps,
			})
		})
	})
	select {
	case <-body.done:
	case <-r.Context().Done():
		// The client went away; the operation's read fails and cleans up.
	}
	return accepted(op.Snapshot()), nil
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

// deleteImage removes an image unless an instance uses it; the file goes
// only when no other name points at the same content.
func (d *Daemon) deleteImage(r *http.Request, c Caller) (response, error) {
	if err := d.authorize(c, PermManageImages); err != nil {
		return response{}, err
	}
	name := r.PathValue("name")
	var removeDigest string
	err := d.store.Update(func(tx *store.Tx) error {
		img, err := tx.Image(name)
		if errors.Is(err, store.ErrNotFound) {
			return &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("image %q not found", name), Hint: "`labvm image list` shows the images"}
		}
		if err != nil {
			return err
		}
		users, err := imageUsers(tx)
		if err != nil {
			return err
		}
		if u := users[name]; len(u) > 0 {
			return fmt.Errorf("image %q is used by %s; delete those instances first: %w", name, strings.Join(u, ", "), errInUse)
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
		return response{}, err
	}
	if removeDigest != "" {
		if err := d.images.Remove(removeDigest); err != nil {
			d.log.Warn("remove image file", "image", name, "error", err)
		}
	}
	return ok(map[string]string{"deleted": name}), nil
}
