package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/images"
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

// callerMayRead approximates whether the caller could read path itself.
// The daemon is root; without this check any user of the socket could
// import (and so read back through a guest) any file on the host.
func callerMayRead(c Caller, fi os.FileInfo) bool {
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

func (d *Daemon) importImage(r *http.Request, c Caller) (response, error) {
	var req api.ImportImageRequest
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
	if !filepath.IsAbs(req.Path) || strings.ContainsRune(req.Path, 0) {
		return response{}, invalidf("image path %q must be absolute", req.Path)
	}
	apps, err := validateApps(req.Apps)
	if err != nil {
		return response{}, err
	}
	fi, err := os.Stat(req.Path)
	switch {
	case err != nil:
		return response{}, invalidf("cannot read %s: %v", req.Path, err)
	case !fi.Mode().IsRegular():
		return response{}, invalidf("%s is not a regular file", req.Path)
	case !callerMayRead(c, fi):
		return response{}, &api.Error{Code: api.CodePermissionDenied, Message: fmt.Sprintf("you (%s) cannot read %s", c.Name, req.Path)}
	}
	if err := d.store.View(func(tx *store.Tx) error {
		if _, err := tx.Image(req.Name); err == nil {
			return &api.Error{Code: api.CodeAlreadyExists, Message: fmt.Sprintf("image %q already exists", req.Name), Hint: "delete it first, or pick another name"}
		}
		return nil
	}); err != nil {
		return response{}, err
	}
	op, err := d.ops.begin(api.OpImageImport, req.Name, "", c)
	if err != nil {
		return response{}, err
	}
	d.goOp(op, func(ctx context.Context, op *Op) error {
		op.Stage("Importing", fmt.Sprintf("%s: checksum, format, copy", req.Path))
		imp, err := d.images.Import(ctx, images.ImportOptions{Source: req.Path, SHA256: req.SHA256})
		if err != nil {
			return fmt.Errorf("import %s: %w", req.Path, err)
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
	return accepted(op.Snapshot()), nil
}

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
