package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/labvm/labvm/daemon/lifecycle"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/vm"
)

// rebuiltBy is who the store says made the records a rebuild recovers.
const rebuiltBy = "labvm doctor --rebuild"

// rebuild recovers records from the data dir after the store was lost or
// replaced: an instance for every directory whose manifest is recoverable
// and whose id and name are free, and an image for every base file no
// record names. It never overwrites a record. It returns one line per
// change, and per manifest it had to skip.
func (dr *Doctor) rebuild(ctx context.Context) ([]string, error) {
	domains, err := dr.hv.OwnedDomains(ctx)
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	running := map[string]bool{}
	for _, dom := range domains {
		running[dom.InstanceID] = true
	}
	entries, err := os.ReadDir(dr.paths.Instances())
	if err != nil {
		return nil, fmt.Errorf("list instance directories: %w", err)
	}
	var acts []string
	for _, e := range entries {
		if !e.IsDir() || dr.recordExists(e.Name()) {
			continue
		}
		m, err := dr.lc.ReadManifest(e.Name())
		if errors.Is(err, os.ErrNotExist) {
			continue // nothing to recover from; doctor reports the directory
		}
		if err == nil {
			err = dr.lc.Recoverable(m)
		}
		if err != nil {
			acts = append(acts, fmt.Sprintf("skipped %s: %v", e.Name(), err))
			continue
		}
		line, err := dr.rebuildInstance(ctx, m, running[m.Instance.ID])
		if err != nil {
			return acts, err
		}
		acts = append(acts, line)
	}
	imgActs, err := dr.rebuildOrphanImages(ctx)
	return append(acts, imgActs...), err
}

// rebuildInstance brings one instance back from its lifecycle.Manifest, with its
// image record if that is missing too. The state comes from what is
// there, not from the manifest: Running with a domain, else Stopped.
func (dr *Doctor) rebuildInstance(ctx context.Context, m lifecycle.Manifest, hasDomain bool) (string, error) {
	inst := m.Instance
	img, imgErr := dr.recoverImage(ctx, inst.Image, inst.ImageDigest)
	now := time.Now().UTC()
	state, reason := vm.StateStopped, "recovered by "+rebuiltBy
	if hasDomain {
		state, reason = vm.StateRunning, "recovered by "+rebuiltBy+"; found running"
	}
	var notes []string
	created := false
	err := dr.store.Update(func(tx *store.Tx) error {
		created, notes = false, nil
		rec := inst
		rec.SetState(state, reason, now)
		if _, err := tx.InstanceByName(rec.Name); err == nil {
			notes = append(notes, "name is taken by another instance")
			return nil
		}
		if imgErr == nil {
			if err := tx.CreateImage(img); err == nil {
				notes = append(notes, "image "+img.Name+" recovered")
			} else if !errors.Is(err, store.ErrExists) {
				return err
			}
		} else {
			notes = append(notes, imgErr.Error())
		}
		if _, err := tx.VNet(rec.VNet); errors.Is(err, store.ErrNotFound) {
			notes = append(notes, fmt.Sprintf("VNet %s is unknown: recreate it with `labvm network create` before starting", rec.VNet))
		}
		if rec.IP.IsValid() {
			if err := tx.AllocateIP(rec.VNet, rec.IP, rec.ID); errors.Is(err, store.ErrExists) {
				notes = append(notes, err.Error())
				rec.IP = netip.Addr{}
				rec.SetState(vm.StateUnknown, "recovered without its address, which another instance holds; delete it and create it again", now)
			} else if err != nil {
				return err
			}
		}
		created = true
		inst = rec
		return tx.CreateInstance(rec)
	})
	if err != nil {
		return "", fmt.Errorf("recover %s: %w", inst.Name, err)
	}
	if !created {
		return fmt.Sprintf("skipped %s (%s): %s", inst.Name, inst.ID, strings.Join(notes, "; ")), nil
	}
	dr.lc.KeepManifest(inst)
	line := fmt.Sprintf("recovered instance %s (owner %s, %s, %s) as %s", inst.Name, inst.Owner(), inst.Size.Name, orNone(inst.IP), inst.State)
	if len(notes) > 0 {
		line += ": " + strings.Join(notes, "; ")
	}
	return line, nil
}

// recoverImage describes the base file of digest as image name, for a
// store that lost the image's record.
func (dr *Doctor) recoverImage(ctx context.Context, name, digest string) (store.Image, error) {
	path := dr.files.Path(digest)
	if path == "" {
		return store.Image{}, fmt.Errorf("image %s: digest %q is not a sha256", name, digest)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return store.Image{}, fmt.Errorf("image %s: base file missing: %w", name, err)
	}
	info, err := storage.Inspect(ctx, path)
	if err != nil {
		return store.Image{}, fmt.Errorf("image %s: %w", name, err)
	}
	return store.Image{
		Name: name, Digest: digest, Path: path, SourceFormat: info.Format,
		VirtualSize: info.VirtualSize, FileSize: fi.Size(),
		ImportedBy: rebuiltBy, ImportedAt: fi.ModTime().UTC(),
	}, nil
}

// rebuildOrphanImages records base files that no image names, as
// sha256-<first 12 hex digits>: the original name is lost with the store,
// but the file, often a large download, is not forgotten.
func (dr *Doctor) rebuildOrphanImages(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(dr.paths.Images())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	named := map[string]bool{}
	if err := dr.store.View(func(tx *store.Tx) error {
		imgs, err := tx.Images()
		for _, img := range imgs {
			named[img.Digest] = true
		}
		return err
	}); err != nil {
		return nil, err
	}
	var acts []string
	for _, e := range entries {
		digest, isBase := strings.CutSuffix(e.Name(), ".qcow2")
		if !isBase || named[digest] || dr.files.Path(digest) == "" {
			continue
		}
		img, err := dr.recoverImage(ctx, "sha256-"+digest[:12], digest)
		if err != nil {
			acts = append(acts, "skipped "+e.Name()+": "+err.Error())
			continue
		}
		err = dr.store.Update(func(tx *store.Tx) error { return tx.CreateImage(img) })
		if errors.Is(err, store.ErrExists) {
			continue
		}
		if err != nil {
			return acts, err
		}
		acts = append(acts, fmt.Sprintf("recovered image %s from %s (its name was lost)", img.Name, e.Name()))
	}
	return acts, nil
}

func orNone(ip netip.Addr) string {
	if ip.IsValid() {
		return ip.String()
	}
	return "no address"
}
