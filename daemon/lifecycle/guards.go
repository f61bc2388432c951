package lifecycle

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/vm"
	"golang.org/x/sys/unix"
)

// DefaultMinFreeDisk is the free space the data dir must keep: thin disks
// grow as guests write, and a full filesystem corrupts them.
const DefaultMinFreeDisk int64 = 2 << 30

// checkHost refuses to create or start an instance the host cannot carry:
// too little free space in the data dir, or less available memory than
// the size needs. Failing here is cheap and clear; failing inside QEMU or
// a guest with a full disk is neither.
func (e *Engine) checkHost(size vm.Size) error {
	var st unix.Statfs_t
	if err := unix.Statfs(e.cfg.DataDir, &st); err != nil {
		return fmt.Errorf("free space of %s: %w", e.cfg.DataDir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < e.cfg.MinFreeDisk {
		return errdefs.New(errdefs.ErrInsufficientResources, "free space there (delete unused instances or images), or lower min_free_disk in the config", "only %s free in %s; labvmd keeps at least %s free so guest disks can grow", storage.FormatSize(free), e.cfg.DataDir, storage.FormatSize(e.cfg.MinFreeDisk))
	}
	avail, err := memAvailable()
	if err != nil {
		e.log.Warn("cannot read available memory; not checking it", "error", err)
		return nil
	}
	need := int64(size.MemoryMiB) << 20
	if avail < need {
		return errdefs.New(errdefs.ErrInsufficientResources, "stop instances you do not use (stopped instances hold no memory), or pick a smaller size", "the host has %s of memory available; %s needs %s", storage.FormatSize(avail), size.Name, storage.FormatSize(need))
	}
	return nil
}

// memAvailable reads MemAvailable from /proc/meminfo: the kernel's own
// estimate of what can be allocated without swapping.
func memAvailable() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	return parseMemAvailable(b)
}

func parseMemAvailable(meminfo []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse MemAvailable %q: %w", f[1], err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no MemAvailable in /proc/meminfo")
}
