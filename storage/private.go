package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Modes of what an instance leaves on the host. Every other local user is
// hostile: a guest's disk holds whatever its owner put there and the seed
// carries keys and setup scripts, so nothing of an instance is readable by
// anyone but root and the QEMU process that must open it.
//
// libvirt's DAC driver (dynamic_ownership) chowns each disk, the seed and
// the backing base to the QEMU user (libvirt-qemu) when a domain starts; at
// stop it gives only the writable disk back to root (read-only and backing
// images stay with the QEMU user, as other domains may share them). It
// never touches directories or modes. Seen on libvirt 9.0.
// So files are owner-only (0600: QEMU reads them as their owner while the
// domain runs), and directories let everyone through but list for no one
// (0711): QEMU walks the path by name, other users cannot learn a name, and
// a name alone opens nothing.
const (
	// PrivateDirMode is the mode of the data dir, instances/, each
	// instances/<id>/ and images/.
	PrivateDirMode fs.FileMode = 0o711
	// PrivateFileMode is the mode of disks, seeds, manifests and logs.
	PrivateFileMode fs.FileMode = 0o600
)

// EnsurePrivateDir creates dir (and its parents, which keep their own
// modes if they exist) and forces PrivateDirMode on it, whatever mode an
// older labvm or the umask gave it.
func EnsurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, PrivateDirMode); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, PrivateDirMode); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}

// RestrictInstanceDirs brings what older versions made under instancesDir
// (0755 directories, 0644 disks and seeds) to the private modes: every
// directory directly below becomes PrivateDirMode, and every regular file
// in those loses its group and other bits. Owners are left alone: a running
// domain's disk belongs to the QEMU user and must stay so. Symlinks are not
// followed. It returns the first error after trying everything.
func RestrictInstanceDirs(instancesDir string) error {
	entries, err := os.ReadDir(instancesDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("restrict instance files: %w", err)
	}
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = fmt.Errorf("restrict instance files: %w", err)
		}
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(instancesDir, e.Name())
		keep(os.Chmod(dir, PrivateDirMode))
		files, err := os.ReadDir(dir)
		if err != nil {
			keep(err)
			continue
		}
		for _, f := range files {
			if f.Type().IsRegular() {
				keep(restrictFile(filepath.Join(dir, f.Name())))
			}
		}
	}
	return first
}

// restrictFile drops group and other permissions from a regular file,
// opened without following symlinks so a swapped entry cannot redirect the
// chmod.
func restrictFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return err
	}
	if st.Mode().Perm()&0o077 == 0 {
		return nil
	}
	return f.Chmod(st.Mode().Perm() &^ 0o077)
}
