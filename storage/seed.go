package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// SeedLabel is the volume label cloud-init's NoCloud datasource looks for.
const SeedLabel = "cidata"

// WriteSeed writes the NoCloud seed for spec to path as an ISO9660 image
// labelled "cidata" holding meta-data, user-data and network-config. The
// file appears atomically with mode 0644 (QEMU runs unprivileged and must
// read it); on failure nothing is left at path or beside it.
func WriteSeed(ctx context.Context, path string, spec SeedSpec) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("write seed %s: %w", path, err)
	}
	userData, err := UserData(spec)
	if err != nil {
		return fmt.Errorf("write seed %s: %w", path, err)
	}
	img, err := buildISO(SeedLabel, []isoFile{
		{name: "meta-data", data: MetaData(spec)},
		{name: "user-data", data: userData},
		{name: "network-config", data: NetworkConfig(spec)},
	}, time.Now())
	if err != nil {
		return fmt.Errorf("write seed %s: %w", path, err)
	}
	if err := writeFileAtomic(ctx, path, img, PrivateFileMode); err != nil {
		return fmt.Errorf("write seed %s: %w", path, err)
	}
	return nil
}

// writeFileAtomic replaces path with data through a temporary file in the
// same directory, so readers see either the old file or the complete new one.
func writeFileAtomic(ctx context.Context, path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name()) // best effort: err is what the caller needs
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	// chmod sets exactly the mode asked for, whatever the umask.
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}
