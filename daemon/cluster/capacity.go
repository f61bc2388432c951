package cluster

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/labvm/labvm/daemon/api"
	"golang.org/x/sys/unix"
)

// HostCapacity reads what this host has: its CPUs, memory (total and
// the kernel's MemAvailable) and the data dir's free space. Cores used
// come from the instances, so the caller fills them in.
func HostCapacity(dataDir string) (api.HostCapacity, error) {
	c := api.HostCapacity{Cores: runtime.NumCPU()}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return c, err
	}
	if c.MemoryTotal, c.MemoryAvailable, err = parseMeminfo(b); err != nil {
		return c, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dataDir, &st); err != nil {
		return c, fmt.Errorf("free space of %s: %w", dataDir, err)
	}
	c.DiskFree = int64(st.Bavail) * st.Bsize
	return c, nil
}

// parseMeminfo reads MemTotal and MemAvailable (kB) as bytes.
func parseMeminfo(b []byte) (total, avail int64, err error) {
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || (f[0] != "MemTotal:" && f[0] != "MemAvailable:") {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse %s %q: %w", f[0], f[1], err)
		}
		if f[0] == "MemTotal:" {
			total = n * 1024
		} else {
			avail = n * 1024
		}
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("no MemTotal or MemAvailable in /proc/meminfo")
	}
	return total, avail, nil
}
