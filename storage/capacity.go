package storage

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrDiskTooLarge means a virtual disk size exceeds the filesystem that
// would hold the disk.
var ErrDiskTooLarge = errors.New("disk larger than its filesystem")

// Capacity is what the filesystem holding a path can store.
type Capacity struct {
	// Size is the filesystem's total size in bytes.
	Size int64
	// Free is what an unprivileged writer may still use, in bytes.
	Free int64
}

// FilesystemCapacity reports the size and free space of the filesystem
// holding path.
func FilesystemCapacity(path string) (Capacity, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Capacity{}, fmt.Errorf("size of the filesystem holding %s: %w", path, err)
	}
	bs := int64(st.Frsize)
	if bs <= 0 {
		bs = int64(st.Bsize)
	}
	return Capacity{Size: int64(st.Blocks) * bs, Free: int64(st.Bavail) * bs}, nil
}

// CheckVirtualSize refuses a disk of virtual size bytes to be kept in dir
// when it is larger than dir's whole filesystem: a thin disk grows as the
// guest writes and could never be filled, so the guest would see I/O
// errors (or the host a full disk) long before the size it was promised.
// Free space is not the limit here; the caller's free-space guard is.
func CheckVirtualSize(dir string, size int64) error {
	c, err := FilesystemCapacity(dir)
	if err != nil {
		return err
	}
	return checkVirtualSize(size, c, dir)
}

func checkVirtualSize(size int64, c Capacity, dir string) error {
	if size > c.Size {
		// Offer whole GiB, a value --disk-size takes back as it is.
		most := c.Size &^ (1<<30 - 1)
		return fmt.Errorf("%w: a %s disk cannot fit on the %s filesystem holding %s (%s free); give a --disk-size of at most %s",
			ErrDiskTooLarge, FormatSize(size), FormatSize(c.Size), dir, FormatSize(c.Free), FormatSize(most))
	}
	return nil
}
