// Package doctor compares the store, libvirt and the data dir and
// reports what disagrees (`labvm doctor`), and finds firewall tables no
// running labvmd owns; it repairs what can be repaired
// without losing anything (--repair) and recovers instances and images
// from the manifests beside their disks when the store was lost
// (--rebuild).
//
// It knows nothing of HTTP or of who may call it.
package doctor

import (
	"context"
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
	"github.com/labvm/labvm/daemon/lifecycle"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/images"
	"github.com/labvm/labvm/vm"
)

// stalePartialAge is when an interrupted pull's bytes stop being worth
// keeping: pulls resume them (ARCHITECTURE.md, "Image pull"), so only old
// ones are junk.
const stalePartialAge = 24 * time.Hour

// domainFiler is implemented by the libvirt driver (vm/libvirt). Without it doctor cannot tell
// this daemon's domains from another labvmd's on the same host, and then
// it only reports, never destroys.
type domainFiler interface {
	DomainFiles(ctx context.Context, name string) ([]string, error)
}

// finding is an api.Finding with the repair --repair would run, if any.
// Each repair re-checks its premise under the store's lock or against
// libvirt, so a finding that went stale meanwhile is left alone.
type finding struct {
	api.Finding
	repair func(ctx context.Context) (string, error)
}

// Hypervisor is what doctor needs from libvirt.
type Hypervisor interface {
	OwnedDomains(ctx context.Context) ([]vm.OwnedDomain, error)
	Destroy(ctx context.Context, name string) error
}

// Doctor finds and mends disagreements between the store, libvirt and the
// data dir.
type Doctor struct {
	store *store.Store
	hv    Hypervisor
	lc    *lifecycle.Engine
	paths lifecycle.Paths
	files *images.Catalogue
	ops   *ops.Engine
	log   *slog.Logger
	// fw and ownTable: see WatchFirewalls.
	fw       Firewalls
	ownTable string
	// mu serialises doctor runs: a repair must not race a rebuild.
	mu sync.Mutex
}

// New returns a doctor.
func New(st *store.Store, hv Hypervisor, lc *lifecycle.Engine, files *images.Catalogue, o *ops.Engine, log *slog.Logger) *Doctor {
	return &Doctor{store: st, hv: hv, lc: lc, paths: lc.Paths(), files: files, ops: o, log: log}
}

// Examine reports the findings without changing anything.
func (dr *Doctor) Examine(ctx context.Context) (api.DoctorReport, error) {
	dr.mu.Lock()
	defer dr.mu.Unlock()
	found, err := dr.diagnose(ctx)
	if err != nil {
		return api.DoctorReport{}, err
	}
	return api.DoctorReport{Findings: apiFindings(found), Actions: []string{}}, nil
}

// Run repairs and/or rebuilds, then reports what remains.
func (dr *Doctor) Run(ctx context.Context, caller string, req api.DoctorRequest) (api.DoctorReport, error) {
	if !req.Repair && !req.Rebuild {
		return api.DoctorReport{}, errdefs.Invalidf("nothing to do: ask for repair, rebuild or both (or GET /v1/doctor to only look)")
	}
	dr.mu.Lock()
	defer dr.mu.Unlock()
	found, err := dr.diagnose(ctx)
	if err != nil {
		return api.DoctorReport{}, err
	}
	report := api.DoctorReport{Findings: apiFindings(found), Actions: []string{}}
	// Rebuild first: a repair must never remove what a rebuild recovers.
	if req.Rebuild {
		acts, err := dr.rebuild(ctx)
		report.Actions = append(report.Actions, acts...)
		if err != nil {
			return api.DoctorReport{}, fmt.Errorf("rebuild (after: %s): %w", strings.Join(acts, "; "), err)
		}
		if found, err = dr.diagnose(ctx); err != nil {
			return api.DoctorReport{}, err
		}
	}
	if req.Repair {
		for _, f := range found {
			if f.repair == nil {
				continue
			}
			what, err := f.repair(ctx)
			if err != nil {
				report.Actions = append(report.Actions, fmt.Sprintf("FAILED to repair %s %s: %v", f.Kind, f.Target, err))
				continue
			}
			if what != "" {
				report.Actions = append(report.Actions, what)
			}
		}
	}
	for _, a := range report.Actions {
		dr.log.Info("doctor", "caller", caller, "action", a)
	}
	after, err := dr.diagnose(ctx)
	if err != nil {
		return api.DoctorReport{}, err
	}
	report.Remaining = apiFindings(after)
	return report, nil
}

func apiFindings(list []finding) []api.Finding {
	out := make([]api.Finding, 0, len(list))
	for _, f := range list {
		f.Repairable = f.repair != nil
		out = append(out, f.Finding)
	}
	return out
}

// survey is one look at the three places state lives. Libvirt and the
// data dir are read before the store: a create writes its record before
// it makes a directory or a domain, so nothing in flight shows up as an
// orphan.
type survey struct {
	domains []vm.OwnedDomain
	// ours says which domains have disks in this data dir; nil when the
	// hypervisor cannot tell.
	ours      map[string]bool
	instDirs  []os.DirEntry
	imageDirs []os.DirEntry
	records   map[string]vm.Instance
	allocs    []store.IPAllocation
	images    []store.Image
}

func (dr *Doctor) takeSurvey(ctx context.Context) (survey, error) {
	var s survey
	var err error
	if s.domains, err = dr.hv.OwnedDomains(ctx); err != nil {
		return s, fmt.Errorf("list domains: %w", err)
	}
	if fl, ok := dr.hv.(domainFiler); ok {
		s.ours = map[string]bool{}
		prefix := dr.paths.Instances() + string(filepath.Separator)
		for _, dom := range s.domains {
			files, err := fl.DomainFiles(ctx, dom.Name)
			if err != nil {
				return s, err
			}
			s.ours[dom.Name] = slices.ContainsFunc(files, func(f string) bool { return strings.HasPrefix(f, prefix) })
		}
	}
	if s.instDirs, err = os.ReadDir(dr.paths.Instances()); err != nil {
		return s, fmt.Errorf("list instance directories: %w", err)
	}
	if s.imageDirs, err = os.ReadDir(dr.paths.Images()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("list images: %w", err)
	}
	err = dr.store.View(func(tx *store.Tx) error {
		list, err := tx.Instances()
		if err != nil {
			return err
		}
		s.records = make(map[string]vm.Instance, len(list))
		for _, inst := range list {
			s.records[inst.ID] = inst
		}
		if s.allocs, err = tx.AllIPAllocations(); err != nil {
			return err
		}
		s.images, err = tx.Images()
		return err
	})
	return s, err
}

// diagnose lists every disagreement between the store, libvirt and the
// data dir, each with its repair if one is safe.
func (dr *Doctor) diagnose(ctx context.Context) ([]finding, error) {
	s, err := dr.takeSurvey(ctx)
	if err != nil {
		return nil, err
	}
	var out []finding
	out = append(out, dr.domainFindings(s)...)
	out = append(out, dr.instanceDirFindings(s)...)
	out = append(out, dr.imageFindings(s)...)
	out = append(out, dr.recordFindings(s)...)
	out = append(out, dr.addressFindings(s)...)
	fw, err := dr.firewallFindings(ctx)
	if err != nil {
		return nil, err
	}
	return append(out, fw...), nil
}

func (dr *Doctor) domainFindings(s survey) []finding {
	var out []finding
	for _, dom := range s.domains {
		if _, known := s.records[dom.InstanceID]; known {
			continue
		}
		f := finding{Finding: api.Finding{Kind: api.FindingUnknownDomain, Target: dom.Name,
			Detail: fmt.Sprintf("carries labvm metadata (instance id %q) but no record owns it", dom.InstanceID)}}
		switch {
		case s.ours == nil:
			f.Fix = "cannot tell whether its disks are in this data dir; check with `virsh dumpxml " + dom.Name + "` and destroy it by hand"
		case !s.ours[dom.Name]:
			continue // another labvmd's, on the same host
		case dr.hasRecoverableManifest(dom.InstanceID):
			f.Fix = "its directory holds a manifest: `labvm doctor --rebuild` adopts it"
		default:
			f.Fix = "--repair destroys it (it is transient: nothing else of it remains)"
			name, id := dom.Name, dom.InstanceID
			f.repair = func(ctx context.Context) (string, error) {
				if dr.recordExists(id) {
					return "", nil
				}
				if err := dr.hv.Destroy(ctx, name); err != nil {
					return "", err
				}
				return "destroyed unknown domain " + name, nil
			}
		}
		out = append(out, f)
	}
	return out
}

func (dr *Doctor) instanceDirFindings(s survey) []finding {
	var out []finding
	for _, e := range s.instDirs {
		path := filepath.Join(dr.paths.Instances(), e.Name())
		if _, known := s.records[e.Name()]; known && e.IsDir() {
			out = append(out, dr.partialManifests(path)...)
			continue
		}
		if _, err := os.Lstat(path); err != nil {
			continue // removed by a delete since it was listed
		}
		kind, what := api.FindingOrphanDir, "directory"
		if !e.IsDir() {
			kind, what = api.FindingOrphanFile, "file"
		}
		f := finding{Finding: api.Finding{Kind: kind, Target: path, Detail: what + " in instances/ that no record owns"}}
		if m, err := dr.lc.ReadManifest(e.Name()); err == nil {
			f.Instance = m.Instance.Name
			if why := dr.lc.Recoverable(m); why != nil {
				f.Detail += fmt.Sprintf("; its manifest (%s) is not recoverable: %v", m.Instance.Name, why)
			} else {
				f.Detail += fmt.Sprintf("; its manifest describes %s (owner %s, %s)", m.Instance.Name, m.Instance.Owner(), m.Instance.IP)
				f.Fix = "`labvm doctor --rebuild` recovers it; remove it by hand if it is unwanted"
				out = append(out, f)
				continue
			}
		}
		f.Fix = "--repair removes it"
		id := e.Name()
		f.repair = func(context.Context) (string, error) {
			if dr.recordExists(id) {
				return "", nil
			}
			if err := os.RemoveAll(path); err != nil {
				return "", err
			}
			return "removed " + path, nil
		}
		out = append(out, f)
	}
	return out
}

// partialManifests reports manifest writes a crash interrupted.
func (dr *Doctor) partialManifests(dir string) []finding {
	entries, _ := os.ReadDir(dir)
	var out []finding
	for _, e := range entries {
		if !lifecycle.IsManifestTemp(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		out = append(out, finding{
			Finding: api.Finding{Kind: api.FindingPartialFile, Target: path, Detail: "a manifest write that did not finish", Fix: "--repair removes it"},
			repair:  removeFile(path),
		})
	}
	return out
}

func (dr *Doctor) imageFindings(s survey) []finding {
	digests := map[string]bool{}
	for _, img := range s.images {
		digests[img.Digest] = true
	}
	busy := dr.imageWorkRunning()
	var out []finding
	for _, e := range s.imageDirs {
		name := e.Name()
		path := filepath.Join(dr.paths.Images(), name)
		switch {
		case name == ".partial" && e.IsDir():
			out = append(out, dr.stalePulls(path, busy)...)
		case strings.HasPrefix(name, ".import-"):
			if busy {
				continue // may be the import running now
			}
			out = append(out, finding{
				Finding: api.Finding{Kind: api.FindingPartialFile, Target: path, Detail: "an image import that did not finish", Fix: "--repair removes it"},
				repair:  removeFile(path),
			})
		case strings.HasSuffix(name, ".qcow2") && dr.files.Path(strings.TrimSuffix(name, ".qcow2")) == path:
			if !digests[strings.TrimSuffix(name, ".qcow2")] && !busy {
				out = append(out, finding{Finding: api.Finding{Kind: api.FindingOrphanFile, Target: path,
					Detail: "base image that no image record names",
					Fix:    "`labvm doctor --rebuild` recovers it as an image; then `labvm image delete` if it is unwanted"}})
			}
		default:
			out = append(out, finding{Finding: api.Finding{Kind: api.FindingOrphanFile, Target: path,
				Detail: "not a file labvm makes", Fix: "remove it by hand if it is not needed"}})
		}
	}
	return out
}

// stalePulls reports downloads nobody resumed for stalePartialAge.
func (dr *Doctor) stalePulls(dir string, busy bool) []finding {
	if busy {
		return nil
	}
	entries, _ := os.ReadDir(dir)
	var out []finding
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < stalePartialAge {
			continue
		}
		path := filepath.Join(dir, e.Name())
		out = append(out, finding{
			Finding: api.Finding{Kind: api.FindingPartialFile, Target: path,
				Detail: fmt.Sprintf("an image download untouched since %s", info.ModTime().UTC().Format(time.RFC3339)),
				Fix:    "--repair removes it (pulling the URL again starts over)"},
			repair: removeFile(path),
		})
	}
	return out
}

func (dr *Doctor) recordFindings(s survey) []finding {
	running := map[string]bool{}
	for _, dom := range s.domains {
		running[dom.InstanceID] = true
	}
	var out []finding
	for _, inst := range s.records {
		if _, busy := dr.ops.Holder(inst.ID); busy || inst.State.Transitional() || inst.State == vm.StateCreateFailed {
			continue
		}
		if _, err := os.Stat(dr.paths.Disk(inst.ID)); err != nil {
			out = append(out, finding{Finding: api.Finding{Kind: api.FindingMissingDisk, Target: dr.paths.Disk(inst.ID), Instance: inst.Name,
				Detail: fmt.Sprintf("%s is %s but its disk is missing: %v", inst.Name, inst.State, err),
				Fix:    "the record is kept; restore the disk, or `labvm delete " + inst.Name + "`"}})
		}
		if inst.State == vm.StateRunning && !running[inst.ID] {
			out = append(out, finding{Finding: api.Finding{Kind: api.FindingMissingDomain, Target: inst.Domain, Instance: inst.Name,
				Detail: inst.Name + " is recorded Running but has no domain",
				Fix:    "`labvm stop " + inst.Name + "` records it Stopped (so does restarting labvmd)"}})
		}
	}
	slices.SortFunc(out, func(a, b finding) int { return strings.Compare(a.Instance, b.Instance) })
	return out
}

func (dr *Doctor) addressFindings(s survey) []finding {
	held := map[string]string{} // vnet/ip → instance id
	var out []finding
	for _, a := range s.allocs {
		key := a.VNet + "/" + a.IP.String()
		held[key] = a.InstanceID
		if inst, ok := s.records[a.InstanceID]; ok && inst.VNet == a.VNet && inst.IP == a.IP {
			continue
		}
		f := finding{Finding: api.Finding{Kind: api.FindingOrphanIP, Target: key,
			Detail: fmt.Sprintf("allocated to instance id %s, which does not hold it", a.InstanceID), Fix: "--repair releases it"}}
		a := a
		f.repair = func(context.Context) (string, error) {
			released := false
			err := dr.store.Update(func(tx *store.Tx) error {
				released = false
				if inst, err := tx.Instance(a.InstanceID); err == nil && inst.VNet == a.VNet && inst.IP == a.IP {
					return nil // taken up again since the diagnosis
				} else if err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
				released = true
				return tx.ReleaseIPOf(a.VNet, a.IP, a.InstanceID)
			})
			if err != nil || !released {
				return "", err
			}
			return "released address " + key, nil
		}
		out = append(out, f)
	}
	for _, inst := range s.records {
		key := inst.VNet + "/" + inst.IP.String()
		if !inst.IP.IsValid() || held[key] == inst.ID {
			continue
		}
		f := finding{Finding: api.Finding{Kind: api.FindingUnallocatedIP, Target: key, Instance: inst.Name,
			Detail: fmt.Sprintf("%s holds %s but the allocation table does not record it", inst.Name, inst.IP)}}
		if other := held[key]; other != "" {
			f.Fix = "the address is allocated to instance id " + other + "; delete one of the two instances"
		} else {
			f.Fix = "--repair records the allocation"
			inst := inst
			f.repair = func(context.Context) (string, error) {
				err := dr.store.Update(func(tx *store.Tx) error { return tx.AllocateIP(inst.VNet, inst.IP, inst.ID) })
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("allocated %s to %s", key, inst.Name), nil
			}
		}
		out = append(out, f)
	}
	return out
}

func (dr *Doctor) recordExists(id string) bool {
	err := dr.store.View(func(tx *store.Tx) error { _, err := tx.Instance(id); return err })
	return err == nil
}

func (dr *Doctor) hasRecoverableManifest(id string) bool {
	m, err := dr.lc.ReadManifest(id)
	return err == nil && dr.lc.Recoverable(m) == nil
}

// imageWorkRunning reports an import or pull in flight: its temporary
// files are not junk.
func (dr *Doctor) imageWorkRunning() bool {
	return dr.ops.RunningKind(string(api.OpImageImport), string(api.OpImagePull))
}

func removeFile(path string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		if err := os.RemoveAll(path); err != nil {
			return "", err
		}
		return "removed " + path, nil
	}
}
