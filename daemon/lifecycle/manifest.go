package lifecycle

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/labvm/labvm/vm"
)

// Every instance directory holds manifest.json next to the disk: the
// instance's whole record (spec, owner, address, image name and digest)
// as of its last state change. The store stays the source of truth; the
// manifest is what `labvm doctor --rebuild` reads when the store was lost,
// so an instance's disk is never without the facts needed to run it.
const (
	manifestFile    = "manifest.json"
	manifestVersion = 1
	// manifestTemp prefixes a manifest being written; one left behind by
	// a crash is a stale partial file for doctor.
	manifestTemp = ".manifest-"
)

// Manifest is the record kept beside each disk.
type Manifest struct {
	Version  int         `json:"version"`
	Instance vm.Instance `json:"instance"`
	// ImageFile is the base image the disk's overlay reads.
	ImageFile string    `json:"image_file"`
	WrittenAt time.Time `json:"written_at"`
}

// writeManifest replaces inst's manifest atomically (write, fsync,
// rename), so a crash leaves the old one or the new one, never half.
// Without the instance directory it does nothing: the directory is made
// by create and removed by rollback and delete, never here.
func (e *Engine) writeManifest(inst vm.Instance) error {
	raw, err := json.MarshalIndent(Manifest{
		Version: manifestVersion, Instance: inst,
		ImageFile: e.images.Path(inst.ImageDigest), WrittenAt: time.Now().UTC(),
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest of %s: %w", inst.Name, err)
	}
	f, err := os.CreateTemp(e.paths.Dir(inst.ID), manifestTemp+"*")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("write manifest of %s: %w", inst.Name, err)
	}
	// A no-op once renamed; a temp left behind is found by doctor
	// (IsManifestTemp) and the write's own error is what matters.
	defer func() { _ = os.Remove(f.Name()) }()
	if _, err := f.Write(append(raw, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write manifest of %s: %w", inst.Name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync manifest of %s: %w", inst.Name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write manifest of %s: %w", inst.Name, err)
	}
	if err := os.Rename(f.Name(), e.paths.Manifest(inst.ID)); err != nil {
		return fmt.Errorf("write manifest of %s: %w", inst.Name, err)
	}
	return nil
}

// KeepManifest is writeManifest for callers that must not fail on it: the
// record in the store is already right, so a failed manifest is logged.
func (e *Engine) KeepManifest(inst vm.Instance) {
	if err := e.writeManifest(inst); err != nil {
		e.log.Warn("manifest not updated", "instance", inst.Name, "error", err)
	}
}

// ReadManifest reads and checks the manifest in instances/<id>. It must
// name the directory's own id and a valid name: a manifest copied from
// another directory would otherwise resurrect the wrong instance.
func (e *Engine) ReadManifest(id string) (Manifest, error) {
	var m Manifest
	raw, err := os.ReadFile(e.paths.Manifest(id))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return m, fmt.Errorf("manifest of %s: %w", id, err)
	}
	switch {
	case m.Version != manifestVersion:
		return m, fmt.Errorf("manifest of %s: version %d, this labvmd reads %d", id, m.Version, manifestVersion)
	case m.Instance.ID != id:
		return m, fmt.Errorf("manifest in %s names instance id %q", id, m.Instance.ID)
	case m.Instance.Domain != vm.DomainName(m.Instance.Name, id):
		return m, fmt.Errorf("manifest of %s: domain %q does not match its name", id, m.Instance.Domain)
	}
	if err := vm.ValidateName(m.Instance.Name); err != nil {
		return m, fmt.Errorf("manifest of %s: %w", id, err)
	}
	return m, nil
}

// Recoverable says whether a manifest describes an instance worth
// bringing back: one that was made (not mid-create, not failed) and not
// being deleted, and whose disk is there.
func (e *Engine) Recoverable(m Manifest) error {
	switch m.Instance.State {
	case vm.StateCreating, vm.StateCreateFailed, vm.StateDeleting:
		return fmt.Errorf("it was %s", m.Instance.State)
	}
	if _, err := os.Stat(e.paths.Disk(m.Instance.ID)); err != nil {
		return fmt.Errorf("no disk: %w", err)
	}
	return nil
}

// IsManifestTemp reports a manifest write a crash interrupted.
func IsManifestTemp(name string) bool { return strings.HasPrefix(name, manifestTemp) }
