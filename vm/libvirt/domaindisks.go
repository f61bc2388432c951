package libvirt

import (
	"context"
	"errors"
	"fmt"

	"github.com/labvm/labvm/vm"
	virt "libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// DomainFiles lists the files a domain's disks read. The daemon uses it to
// tell its own domains from another labvmd's on the same host: both carry
// labvm metadata, only the disks say which data dir they belong to. A
// domain that is gone has no files and is not an error.
func (l *Driver) DomainFiles(ctx context.Context, name string) ([]string, error) {
	var files []string
	err := l.withDomain(ctx, name, func(d *virt.Domain) error {
		raw, err := d.GetXMLDesc(0)
		if hasCode(err, virt.ERR_NO_DOMAIN) {
			return nil
		}
		if err != nil {
			return err
		}
		var dom libvirtxml.Domain
		if err := dom.Unmarshal(raw); err != nil {
			return fmt.Errorf("parse XML of %s: %w", name, err)
		}
		files = files[:0]
		if dom.Devices == nil {
			return nil
		}
		for _, disk := range dom.Devices.Disks {
			if disk.Source != nil && disk.Source.File != nil && disk.Source.File.File != "" {
				files = append(files, disk.Source.File.File)
			}
		}
		return nil
	})
	if errors.Is(err, vm.ErrDomainNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("disks of domain %s: %w", name, err)
	}
	return files, nil
}
