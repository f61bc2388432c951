package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// Account is a Unix user as the kernel checks permissions for it: its uid
// and every group it is in.
type Account struct {
	Name string
	UID  uint32
	GIDs []uint32
}

// TraverseError says which directory on the way to a path an account
// cannot enter, and what would let it.
type TraverseError struct {
	Path    string // the path the account must reach
	Blocker string // the first directory it cannot search
	Mode    fs.FileMode
	UID     uint32 // the blocker's owner
	GID     uint32
	Account Account
}

func (e *TraverseError) Error() string {
	return fmt.Sprintf("%s cannot be reached by %s (uid %d), the user QEMU runs as: %s is %s (owner uid %d, group gid %d) and lets it not search; "+
		"give it search permission (chmod o+x %s, or setfacl -m u:%s:x %s) or put the data dir under a directory it can enter, such as /var/lib/labvm",
		e.Path, e.Account.Name, e.Account.UID, e.Blocker, e.Mode.Perm(), e.UID, e.GID, e.Blocker, e.Account.Name, e.Blocker)
}

// CheckTraversable reports whether acct can walk down to path: it needs
// search (x) permission on every existing directory from / to path
// itself, judged by owner, group and other bits as the kernel would for a
// process with acct's uid and groups. Directories that do not exist yet
// end the walk (whoever creates them chooses their mode). A directory with
// a POSIX ACL is taken as passable: the mode bits alone cannot say, and an
// ACL is how an admin grants exactly this. A uid of 0 passes everything.
func CheckTraversable(path string, acct Account) error {
	return checkTraversable(path, acct, statOwner)
}

// ownerFn stats a directory: its mode, owner, group, and whether it
// carries an access ACL. It follows symlinks, as the kernel does on a walk.
type ownerFn func(dir string) (mode fs.FileMode, uid, gid uint32, acl bool, err error)

func statOwner(dir string) (fs.FileMode, uint32, uint32, bool, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, 0, 0, false, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, 0, false, fmt.Errorf("stat %s: no owner information", dir)
	}
	_, aerr := unix.Getxattr(dir, "system.posix_acl_access", nil)
	return fi.Mode(), st.Uid, st.Gid, aerr == nil, nil
}

func checkTraversable(path string, acct Account, stat ownerFn) error {
	if acct.UID == 0 {
		return nil
	}
	path = filepath.Clean(path)
	if !filepath.IsAbs(path) {
		return fmt.Errorf("check access to %s: not an absolute path", path)
	}
	// Every prefix, from / down to path.
	dirs := []string{path}
	for d := path; d != "/"; {
		d = filepath.Dir(d)
		dirs = append(dirs, d)
	}
	slices.Reverse(dirs)
	for _, dir := range dirs {
		mode, uid, gid, acl, err := stat(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("check access to %s: %w", path, err)
		}
		if !mode.IsDir() {
			return fmt.Errorf("check access to %s: %s is not a directory", path, dir)
		}
		if acl || canSearch(mode, uid, gid, acct) {
			continue
		}
		return &TraverseError{Path: path, Blocker: dir, Mode: mode, UID: uid, GID: gid, Account: acct}
	}
	return nil
}

// canSearch applies the kernel's rule: the owner class if the uid owns
// it, else the group class if one of its groups owns it, else other.
func canSearch(mode fs.FileMode, uid, gid uint32, acct Account) bool {
	perm := mode.Perm()
	switch {
	case acct.UID == uid:
		return perm&0o100 != 0
	case slices.Contains(acct.GIDs, gid):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}
