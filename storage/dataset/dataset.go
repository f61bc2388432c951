// Package dataset owns the host side of datasets: checking a directory an
// owner declares as one, and the read-only bind mounts that are the only
// thing virtiofsd is ever given to share. Each running instance gets its
// own mount of each of its datasets, ROOT/<instance-id>/<name>, made
// read-only, nosuid and nodev by the kernel (mount(2): MS_BIND, then
// MS_REMOUNT|MS_BIND|MS_RDONLY|MS_NOSUID|MS_NODEV), so a guest's root can
// neither write nor create setuid or device files whatever it sends
// virtiofsd: the refusal comes from the host's VFS, not from the guest's
// mount options.
//
// It knows nothing of records, instances' states or who may declare a
// dataset: the daemon decides when to mount and unmount.
package dataset

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/labvm/labvm/vm"
)

// ErrInvalid is wrapped by every refusal of a name or a directory.
var ErrInvalid = errors.New("invalid dataset")

// ErrSourceMissing is returned when a dataset's host directory is gone
// (or is no directory any more) when an instance needs it.
var ErrSourceMissing = errors.New("dataset directory missing")

// ValidateName applies the naming rule of instances and VNets: 3-24
// characters of [a-z0-9-]. The name is a guest path component and the
// virtio-fs tag, so nothing else may pass.
func ValidateName(name string) error {
	if err := vm.ValidateNameOf("dataset", name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// CheckSource validates a directory declared as a dataset and returns its
// cleaned path: absolute, an existing directory, and neither inside the
// data dir nor holding it (a dataset of /var/lib would hand every guest
// every other instance's disk).
func CheckSource(path, dataDir string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%w: path %q: want an absolute path", ErrInvalid, path)
	}
	clean := filepath.Clean(path)
	fi, err := os.Stat(clean)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrInvalid, clean, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%w: %s is not a directory", ErrInvalid, clean)
	}
	real, err := filepath.EvalSymlinks(clean)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrInvalid, clean, err)
	}
	data, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		data = filepath.Clean(dataDir)
	}
	if within(real, data) || within(data, real) {
		return "", fmt.Errorf("%w: %s overlaps labvm's data dir %s (guests would see instances' disks)", ErrInvalid, clean, data)
	}
	return clean, nil
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}

// Mounts are the per-instance mounts under Root (DATA_DIR/datasets).
type Mounts struct {
	Root string
	// HostNS is the mount namespace libvirtd's virtiofsd must see the
	// mounts in; empty means PID 1's (/proc/1/ns/mnt).
	HostNS string
}

func (m Mounts) hostNS() string {
	if m.HostNS != "" {
		return m.HostNS
	}
	return "/proc/1/ns/mnt"
}

// Dir holds one instance's mounts.
func (m Mounts) Dir(instanceID string) string { return filepath.Join(m.Root, instanceID) }

// Path is where an instance's dataset is mounted on the host: the
// directory virtiofsd serves.
func (m Mounts) Path(instanceID, name string) string {
	return filepath.Join(m.Dir(instanceID), name)
}

// Mount makes the read-only mount of source for an instance's dataset
// and returns its path. A mount already there is replaced, so a mount
// left by a guest that powered itself off never serves stale content. A
// missing source is ErrSourceMissing, and then nothing is left behind.
func (m Mounts) Mount(instanceID, name, source string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	if instanceID == "" || strings.ContainsAny(instanceID, "/.") {
		return "", fmt.Errorf("%w: instance id %q", ErrInvalid, instanceID)
	}
	target := m.Path(instanceID, name)
	err := inMountNS(m.hostNS(), func() error {
		if fi, err := os.Stat(source); err != nil {
			return fmt.Errorf("%w: dataset %s: %w", ErrSourceMissing, name, err)
		} else if !fi.IsDir() {
			return fmt.Errorf("%w: dataset %s: %s is not a directory", ErrSourceMissing, name, source)
		}
		for _, d := range []string{m.Root, m.Dir(instanceID)} {
			if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("create %s: %w", d, err)
			}
		}
		detach(target)
		if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create %s: %w", target, err)
		}
		if err := bindReadOnly(source, target); err != nil {
			_ = os.Remove(target) // the mount error is the one to report
			return fmt.Errorf("dataset %s: %w", name, err)
		}
		return nil
	})
	return target, err
}

// roFlags are what the host enforces on every dataset mount.
const roFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV

// bindReadOnly bind-mounts source at target, then makes that mount
// read-only, nosuid and nodev (a bind mount ignores those flags on its
// first call) and private, so nothing mounted later below either side
// propagates to the other.
func bindReadOnly(source, target string) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount %s at %s: %w", source, target, err)
	}
	if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|roFlags, ""); err != nil {
		detach(target)
		return fmt.Errorf("make %s read-only: %w", target, err)
	}
	if err := unix.Mount("", target, "", unix.MS_PRIVATE, ""); err != nil {
		detach(target)
		return fmt.Errorf("make %s private: %w", target, err)
	}
	return nil
}

// detach lazily unmounts whatever is mounted at target, as often as
// something is (a mount may hide another); nothing mounted is no error.
// Lazily, because the virtiofsd of a running guest may hold it: it keeps
// its own copy in its own namespace, which stays valid.
func detach(target string) {
	for range 8 {
		if err := unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
			return
		}
	}
}

// Release unmounts every dataset of an instance and removes its
// directory; an instance with none is no error.
func (m Mounts) Release(instanceID string) error {
	if instanceID == "" || strings.ContainsAny(instanceID, "/.") {
		return fmt.Errorf("%w: instance id %q", ErrInvalid, instanceID)
	}
	dir := m.Dir(instanceID)
	return inMountNS(m.hostNS(), func() error {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", dir, err)
		}
		var errs []error
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			detach(p)
			if err := os.Remove(p); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
			}
		}
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
		}
		return errors.Join(errs...)
	})
}

// Instances lists the ids of the instances that have mounts (or their
// directories) under Root.
func (m Mounts) Instances() ([]string, error) {
	entries, err := os.ReadDir(m.Root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", m.Root, err)
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// MountOptions returns the per-mount options (ro, nosuid, nodev, …) of
// the mount at path as this process sees it, and false when nothing is
// mounted there. It reads the calling thread's view
// (/proc/thread-self/mountinfo; see ownMountNS for why not /proc/self).
func MountOptions(path string) ([]string, bool, error) {
	raw, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, false, err
	}
	var opts []string
	found := false
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		// id parent major:minor root mountpoint options ...
		if len(f) < 6 || unescapeMountinfo(f[4]) != path {
			continue
		}
		opts, found = strings.Split(f[5], ","), true // the last one is the top
	}
	return opts, found, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of
// mountinfo's paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + c - '0'
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ownMountNS is this process's mount namespace as the calling thread sees
// it. Not /proc/self, which is the main thread's: when the goroutine that
// joined another namespace below happens to run on Go's main thread, the
// runtime cannot end that thread and parks it for good, still in the
// other namespace, and /proc/self then shows that namespace. Every other
// thread, and so every goroutine that runs, stays in labvmd's own.
const ownMountNS = "/proc/thread-self/ns/mnt"

// inMountNS runs fn in the mount namespace ns (PID 1's, in labvmd) when
// labvmd runs in another: systemd gives it one of its own for
// ProtectSystem= and ProtectHome=, and mounts made there never reach
// libvirtd and the virtiofsd it starts. fn runs on a thread of its own
// that has left the shared filesystem context (unshare CLONE_FS) and
// joined ns; the thread is never handed back to the Go scheduler, so no
// other goroutine ever runs there. When the namespaces are the same, or
// ns cannot be read (a container hiding PID 1's), fn runs as it is.
func inMountNS(ns string, fn func() error) error {
	own, err1 := os.Readlink(ownMountNS)
	other, err2 := os.Readlink(ns)
	if err1 != nil || err2 != nil || own == other {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// Not unlocked on purpose: the thread exits with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("leave the shared filesystem context: %w", err)
			return
		}
		fd, err := unix.Open(ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open the host's mount namespace: %w", err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNS)
		_ = unix.Close(fd) // read-only namespace handle
		if err != nil {
			errc <- fmt.Errorf("enter the host's mount namespace %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
