package cluster

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/vm"
)

// Place chooses the host a create without a pinned host goes to. The
// policy: among hosts that are up, have the image and have the size's
// memory available, the one with the most free cores (its cores minus
// those its instances hold, which may be negative: cores are
// overcommitted), then the most available memory, then the name. Hosts
// judge by what they last published (at most 15 s old).
func (m *Member) Place(ctx context.Context, image string, size vm.Size) (api.Placement, error) {
	n := struct {
		Image     string
		MemoryMiB int
	}{image, size.MemoryMiB}
	v, err := m.read(ctx, hostsOnly)
	if err != nil {
		return api.Placement{}, err
	}
	type cand struct {
		name string
		h    hostRecord
	}
	var fits []cand
	var withImage, noMemory []string
	for name, h := range v.hosts {
		if !v.alive[name] || !slices.Contains(h.Images, n.Image) {
			continue
		}
		withImage = append(withImage, name)
		if h.MemoryAvailable < int64(n.MemoryMiB)<<20 {
			noMemory = append(noMemory, name)
			continue
		}
		fits = append(fits, cand{name, h})
	}
	if len(fits) == 0 {
		sort.Strings(withImage)
		if len(withImage) == 0 {
			var has []string
			for name, h := range v.hosts {
				if slices.Contains(h.Images, n.Image) {
					has = append(has, name+" (lost)")
				}
			}
			sort.Strings(has)
			hint := "import it on a host (`labvm --host ssh://HOST image import " + n.Image + " FILE`)"
			if len(has) > 0 {
				hint = "only lost hosts have it: " + strings.Join(has, ", ") + "; bring one back or import the image on another host"
			}
			return api.Placement{}, errdefs.New(errdefs.ErrInsufficientResources, hint, "no host of cluster %s that is up has image %q", m.cfg.Name, n.Image)
		}
		sort.Strings(noMemory)
		return api.Placement{}, errdefs.New(errdefs.ErrInsufficientResources, "stop or delete instances on one of them, or pick a smaller size",
			"no host of cluster %s has %d MiB of memory available for the size (hosts with image %q: %s)", m.cfg.Name, n.MemoryMiB, n.Image, strings.Join(withImage, ", "))
	}
	sort.Slice(fits, func(i, j int) bool {
		a, b := fits[i], fits[j]
		fa, fb := a.h.Cores-a.h.CoresUsed, b.h.Cores-b.h.CoresUsed
		if fa != fb {
			return fa > fb
		}
		if a.h.MemoryAvailable != b.h.MemoryAvailable {
			return a.h.MemoryAvailable > b.h.MemoryAvailable
		}
		return a.name < b.name
	})
	best := fits[0]
	return api.Placement{Host: best.name, SSH: best.h.SSH, Socket: best.h.Socket, Local: best.name == m.cfg.Host,
		Why: fmt.Sprintf("most free cores (%d of %d) among %d host(s) with the image and room", best.h.Cores-best.h.CoresUsed, best.h.Cores, len(fits))}, nil
}
