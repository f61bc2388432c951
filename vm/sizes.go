package vm

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Size is a VM size: a fixed shape of vCPUs and memory. An instance's size
// is chosen at creation and never changes; the family groups sizes for
// quota accounting.
type Size struct {
	Name      string `json:"name" yaml:"name"`
	Family    string `json:"family" yaml:"family"`
	VCPUs     int    `json:"vcpus" yaml:"vcpus"`
	MemoryMiB int    `json:"memory_mib" yaml:"memory_mib"`
}

// ErrUnknownSize is returned for a size name not in the catalogue.
var ErrUnknownSize = errors.New("unknown size")

// DefaultSizes mirrors the cloud sizes data-science teams already know, so a
// create command from a managed service works unchanged.
func DefaultSizes() []Size {
	return []Size{
		{Name: "Standard_B1s", Family: "standardBSFamily", VCPUs: 1, MemoryMiB: 1024},
		{Name: "Standard_B2s", Family: "standardBSFamily", VCPUs: 2, MemoryMiB: 4096},
		{Name: "Standard_D2s_v3", Family: "standardDSv3Family", VCPUs: 2, MemoryMiB: 8192},
		{Name: "Standard_DS11_v2", Family: "standardDSv2Family", VCPUs: 2, MemoryMiB: 14336},
		{Name: "Standard_D3_v2", Family: "standardDv2Family", VCPUs: 4, MemoryMiB: 14336},
		{Name: "Standard_DS3_v2", Family: "standardDSv2Family", VCPUs: 4, MemoryMiB: 14336},
		{Name: "Standard_E4s_v3", Family: "standardESv3Family", VCPUs: 4, MemoryMiB: 32768},
	}
}

// Catalogue is the set of sizes a daemon offers.
type Catalogue struct {
	byName map[string]Size
}

// NewCatalogue validates sizes and indexes them. Later entries override
// earlier ones with the same name, so a config file can redefine a default.
func NewCatalogue(sizes ...[]Size) (*Catalogue, error) {
	c := &Catalogue{byName: map[string]Size{}}
	for _, list := range sizes {
		for _, s := range list {
			if err := s.validate(); err != nil {
				return nil, err
			}
			c.byName[s.Name] = s
		}
	}
	return c, nil
}

func (s Size) validate() error {
	switch {
	case s.Name == "" || strings.ContainsAny(s.Name, " /\t\n"):
		return fmt.Errorf("size name %q: must be non-empty without spaces or slashes", s.Name)
	case s.Family == "":
		return fmt.Errorf("size %s: family is required (quota is counted per family)", s.Name)
	case s.VCPUs < 1 || s.VCPUs > 256:
		return fmt.Errorf("size %s: vcpus %d out of range 1-256", s.Name, s.VCPUs)
	case s.MemoryMiB < 128:
		return fmt.Errorf("size %s: memory_mib %d below 128", s.Name, s.MemoryMiB)
	}
	return nil
}

// Lookup finds a size by exact name.
func (c *Catalogue) Lookup(name string) (Size, error) {
	s, ok := c.byName[name]
	if !ok {
		return Size{}, fmt.Errorf("%w %q; `labvm sizes` lists the available ones", ErrUnknownSize, name)
	}
	return s, nil
}

// List returns all sizes ordered by family, then vCPUs, then name.
func (c *Catalogue) List() []Size {
	out := make([]Size, 0, len(c.byName))
	for _, s := range c.byName {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Family != b.Family {
			return a.Family < b.Family
		}
		if a.VCPUs != b.VCPUs {
			return a.VCPUs < b.VCPUs
		}
		return a.Name < b.Name
	})
	return out
}
