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
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/images"
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

// Files is the content-addressed file store.
func (l *Library) Files() *images.Catalogue { return l.files }

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

// callerMayRead approximates whether the caller could read path itself.
// The daemon is root; without this check any user of the socket could
// import (and so read back through a guest) any file on the host.
func callerMayRead(c authz.Caller, fi os.FileInfo) bool {
	if c.IsRoot() {
		return true
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	mode := fi.Mode().Perm()
	switch {
	case int(st.Uid) == c.UID:
		return mode&0o400 != 0
	case int(st.Gid) == c.GID:
		return mode&0o040 != 0
	}
	return mode&0o004 != 0
}

// Import copies an image file into the library under a name.
func (l *Library) Import(c authz.Caller, req api.ImportImageRequest) (store.Operation, error) {
	var response store.Operation
	if err := validateImageName(req.Name); err != nil {
		return response, err
	}
	if !filepath.IsAbs(req.Path) || strings.ContainsRune(req.Path, 0) {
		return response, errdefs.Invalidf("image path %q must be absolute", req.Path)
	}
	apps, err := validateApps(req.Apps)
	if err != nil {
		return response, err
	}
	fi, err := os.Stat(req.Path)
	switch {
	case err != nil:
		return response, errdefs.Invalidf("cannot read %s: %v", req.Path, err)
	case !fi.Mode().IsRegular():
		return response, errdefs.Invalidf("%s is not a regular file", req.Path)
	case !callerMayRead(c, fi):
		return response, errdefs.New(errdefs.ErrPermissionDenied, "", "you (%s) cannot read %s", c.Name, req.Path)
	}
	if err := l.store.View(func(tx *store.Tx) error {
		if _, err := tx.Image(req.Name); err == nil {
			return errdefs.New(errdefs.ErrAlreadyExists, "delete it first, or pick another name", "image %q already exists", req.Name)
		}
		return nil
	}); err != nil {
		return response, err
	}
	op, err := l.ops.Begin(api.OpImageImport, req.Name, "", ops.Who{Name: c.Name, UID: c.UID})
	if err != nil {
		return response, err
	}
	snap := op.Snapshot()
	l.ops.Go(op, func(ctx context.Context, op *ops.Op) error {
		op.Stage(StepImport, fmt.Sprintf("%s: checksum, format, copy", req.Path))
		imp, err := l.files.Import(ctx, images.ImportOptions{Source: req.Path, SHA256: req.SHA256})
		if err != nil {
			return fmt.Errorf("import %s: %w", req.Path, err)
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
	return snap, nil
}

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
