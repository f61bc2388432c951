// Package datasets owns the datasets owners declare: their records, the
// refusal to remove one that an instance was created with, the check of
// a create's datasets, and, for the lifecycle, the host mounts a running
// instance's guest reads through virtiofs (storage/dataset): made before
// its domain boots, released once it is gone, and at daemon start and
// stop for every instance that is not running.
//
// It knows nothing of HTTP or of who may call it: the API authorizes
// first (declaring and removing are owners' rights).
package datasets

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/storage/dataset"
	"github.com/labvm/labvm/vm"
)

// MaxPerInstance bounds the datasets of one instance: each is a virtiofsd
// process and a PCI device.
const MaxPerInstance = 8

// Engine manages datasets.
type Engine struct {
	dataDir string
	store   *store.Store
	mounts  dataset.Mounts
	log     *slog.Logger
	// mu serialises mounts and releases, so a release at daemon stop
	// never races a boot's mount of the same instance.
	mu sync.Mutex
}

// New returns an engine whose mounts live in DATA_DIR/datasets, made in
// the mount namespace hostNS (a /proc/PID/ns/mnt path; empty: PID 1's).
func New(dataDir, hostNS string, st *store.Store, log *slog.Logger) *Engine {
	return &Engine{dataDir: dataDir, store: st, mounts: dataset.Mounts{Root: filepath.Join(dataDir, "datasets"), HostNS: hostNS}, log: log}
}

// Mounts are where the host mounts live (tests, doctor).
func (e *Engine) Mounts() dataset.Mounts { return e.mounts }

// Add declares a dataset: a free name and an existing directory that
// does not overlap the data dir.
func (e *Engine) Add(by string, req api.AddDatasetRequest) (api.Dataset, error) {
	if err := dataset.ValidateName(req.Name); err != nil {
		return api.Dataset{}, err
	}
	path, err := dataset.CheckSource(req.Path, e.dataDir)
	if err != nil {
		return api.Dataset{}, errdefs.WithHint(err, "give an absolute path to an existing directory on labvmd's host, e.g. /srv/datasets/"+req.Name)
	}
	d := store.Dataset{Name: req.Name, Path: path, CreatedBy: by, CreatedAt: time.Now().UTC()}
	err = e.store.Update(func(tx *store.Tx) error { return tx.CreateDataset(d) })
	if errors.Is(err, store.ErrExists) {
		return api.Dataset{}, errdefs.New(errdefs.ErrAlreadyExists, "`labvm dataset list` shows the datasets; pick another name or remove that one first",
			"dataset %q already exists", req.Name)
	}
	if err != nil {
		return api.Dataset{}, err
	}
	return wire(d, nil), nil
}

// List is every dataset with the instances created with it.
func (e *Engine) List() ([]api.Dataset, error) {
	out := []api.Dataset{}
	err := e.store.View(func(tx *store.Tx) error {
		list, err := tx.Datasets()
		if err != nil {
			return err
		}
		insts, err := tx.Instances()
		if err != nil {
			return err
		}
		for _, d := range list {
			var users []string
			for _, inst := range insts {
				if slices.Contains(inst.Datasets, d.Name) {
					users = append(users, inst.Name)
				}
			}
			out = append(out, wire(d, users))
		}
		return nil
	})
	return out, err
}

func wire(d store.Dataset, users []string) api.Dataset {
	if users == nil {
		users = []string{}
	}
	return api.Dataset{Name: d.Name, Path: d.Path, CreatedBy: d.CreatedBy, CreatedAt: d.CreatedAt, UsedBy: users}
}

// Remove forgets a dataset no instance, running or stopped, was created
// with. The host directory is left as it is.
func (e *Engine) Remove(name string) error {
	return e.store.Update(func(tx *store.Tx) error {
		if _, err := tx.Dataset(name); errors.Is(err, store.ErrNotFound) {
			return errdefs.New(errdefs.ErrNotFound, "`labvm dataset list` shows the datasets", "dataset %q not found", name)
		} else if err != nil {
			return err
		}
		users, err := tx.DatasetUsers(name)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return errdefs.New(errdefs.ErrConflict, "delete those instances first (`labvm delete NAME`); a dataset is fixed at create",
				"dataset %q is in use by %d instance(s): %s", name, len(users), strings.Join(users, ", "))
		}
		return tx.DeleteDataset(name)
	})
}

// Check validates a create's datasets inside its transaction, so a
// dataset cannot be removed between the check and the record: each a
// declared dataset, given once, its directory there now.
func (e *Engine) Check(tx *store.Tx, names []string) error {
	if len(names) > MaxPerInstance {
		return errdefs.Invalidf("--dataset given %d times: at most %d datasets per instance", len(names), MaxPerInstance)
	}
	for i, name := range names {
		if slices.Contains(names[:i], name) {
			return errdefs.Invalidf("--dataset %s given twice", name)
		}
		d, err := tx.Dataset(name)
		if errors.Is(err, store.ErrNotFound) {
			return errdefs.New(errdefs.ErrInvalidArgument, "`labvm dataset list` shows the datasets; an owner declares one with `labvm dataset add NAME DIR`",
				"unknown dataset %q", name)
		}
		if err != nil {
			return err
		}
		if fi, err := os.Stat(d.Path); err != nil {
			return fmt.Errorf("%w: dataset %s: %v", dataset.ErrSourceMissing, name, err)
		} else if !fi.IsDir() {
			return fmt.Errorf("%w: dataset %s: %s is not a directory", dataset.ErrSourceMissing, name, d.Path)
		}
	}
	return nil
}

// Attach mounts an instance's datasets for its next boot and returns
// them as the domain's shares. Any failure (a directory gone, a record
// removed) unmounts what it had mounted: a start that fails here leaves
// nothing behind.
func (e *Engine) Attach(inst vm.Instance) ([]vm.Share, error) {
	if len(inst.Datasets) == 0 {
		return nil, nil
	}
	var records []store.Dataset
	err := e.store.View(func(tx *store.Tx) error {
		for _, name := range inst.Datasets {
			d, err := tx.Dataset(name)
			if errors.Is(err, store.ErrNotFound) {
				// Only after a doctor --rebuild: removal is refused in use.
				return errdefs.New(errdefs.ErrNotFound, "an owner declares it again: `sudo labvm dataset add "+name+" DIR`",
					"%s cannot start: its dataset %q is not declared", inst.Name, name)
			}
			if err != nil {
				return fmt.Errorf("dataset %s: %w", name, err)
			}
			records = append(records, d)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var shares []vm.Share
	for _, d := range records {
		path, err := e.mounts.Mount(inst.ID, d.Name, d.Path)
		if err != nil {
			if rerr := e.mounts.Release(inst.ID); rerr != nil {
				e.log.Warn("release datasets after a failed mount", "instance", inst.Name, "error", rerr)
			}
			return nil, fmt.Errorf("%s cannot start: %w", inst.Name, err)
		}
		shares = append(shares, vm.Share{Source: path, Tag: d.Name})
	}
	return shares, nil
}

// Detach releases an instance's mounts once its domain is gone; failures
// are logged (the next start replaces the mounts, the next daemon start
// releases them).
func (e *Engine) Detach(inst vm.Instance) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.mounts.Release(inst.ID); err != nil {
		e.log.Warn("release dataset mounts", "instance", inst.Name, "error", err)
	}
}

// Reconcile releases the mounts of every instance not in running. At
// daemon start, with running empty, it releases them all: a running
// guest's virtiofsd keeps its own copy of its mounts in its own mount
// namespace, so it needs none on the host.
func (e *Engine) Reconcile(running map[string]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids, err := e.mounts.Instances()
	if err != nil {
		e.log.Warn("list dataset mounts", "error", err)
		return
	}
	for _, id := range ids {
		if running[id] {
			continue
		}
		if err := e.mounts.Release(id); err != nil {
			e.log.Warn("release dataset mounts", "instance_id", id, "error", err)
		}
	}
}
