package storage

import (
	"errors"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestCheckTraversable(t *testing.T) {
	type dir struct {
		mode     fs.FileMode
		uid, gid uint32
		acl      bool
	}
	qemu := Account{Name: "libvirt-qemu", UID: 64055, GIDs: []uint32{107, 64055}}
	root := dir{mode: fs.ModeDir | 0o755}
	tests := []struct {
		name        string
		path        string
		acct        Account
		tree        map[string]dir
		wantBlocker string // "" = passes
	}{
		{name: "world-searchable", path: "/var/lib/labvm", acct: qemu,
			tree: map[string]dir{"/": root, "/var": root, "/var/lib": root, "/var/lib/labvm": {mode: fs.ModeDir | 0o711}}},
		{name: "0700 home", path: "/home/alice/labvm", acct: qemu,
			tree: map[string]dir{"/": root, "/home": root, "/home/alice": {mode: fs.ModeDir | 0o700, uid: 1000, gid: 1000}}, wantBlocker: "/home/alice"},
		{name: "0700 temp dir, the data dir not made yet", path: "/tmp/x/data", acct: qemu,
			tree: map[string]dir{"/": root, "/tmp": {mode: fs.ModeDir | fs.ModeSticky | 0o777}, "/tmp/x": {mode: fs.ModeDir | 0o700}}, wantBlocker: "/tmp/x"},
		{name: "missing parents end the walk", path: "/srv/labvm/data", acct: qemu,
			tree: map[string]dir{"/": root, "/srv": root}},
		{name: "group search through a supplementary group", path: "/srv/vms", acct: qemu,
			tree: map[string]dir{"/": root, "/srv": {mode: fs.ModeDir | 0o710, gid: 107}, "/srv/vms": root}},
		{name: "group without x, other with x: group class wins", path: "/srv/vms", acct: qemu,
			tree: map[string]dir{"/": root, "/srv": {mode: fs.ModeDir | 0o701, gid: 107}}, wantBlocker: "/srv"},
		{name: "owner without x", path: "/srv/vms", acct: qemu,
			tree: map[string]dir{"/": root, "/srv": {mode: fs.ModeDir | 0o611, uid: 64055}}, wantBlocker: "/srv"},
		{name: "an ACL is trusted", path: "/home/alice/labvm", acct: qemu,
			tree: map[string]dir{"/": root, "/home": root, "/home/alice": {mode: fs.ModeDir | 0o750, uid: 1000, gid: 1000, acl: true}}},
		{name: "root passes everything", path: "/home/alice/labvm", acct: Account{Name: "root"},
			tree: map[string]dir{"/": root, "/home": root, "/home/alice": {mode: fs.ModeDir | 0o700, uid: 1000}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stat := func(p string) (fs.FileMode, uint32, uint32, bool, error) {
				d, ok := tt.tree[p]
				if !ok {
					return 0, 0, 0, false, fs.ErrNotExist
				}
				return d.mode, d.uid, d.gid, d.acl, nil
			}
			err := checkTraversable(tt.path, tt.acct, stat)
			var te *TraverseError
			switch {
			case tt.wantBlocker == "" && err != nil:
				t.Fatalf("error: %v", err)
			case tt.wantBlocker != "" && !errors.As(err, &te):
				t.Fatalf("error = %v, want a TraverseError at %s", err, tt.wantBlocker)
			case tt.wantBlocker != "" && te.Blocker != tt.wantBlocker:
				t.Fatalf("blocked at %s, want %s", te.Blocker, tt.wantBlocker)
			}
			if te != nil {
				for _, want := range []string{tt.wantBlocker, "libvirt-qemu", "chmod o+x " + tt.wantBlocker} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("message %q does not say %q", err, want)
					}
				}
			}
		})
	}
}

// TestCheckTraversableOnDisk runs the real stat on a 0700 directory: a
// stranger's uid is refused there, its owner is not.
func TestCheckTraversableOnDisk(t *testing.T) {
	base := t.TempDir()
	private := filepath.Join(base, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(me.Uid)
	target := filepath.Join(private, "data")
	stranger := Account{Name: "stranger", UID: 4000000001, GIDs: []uint32{4000000001}}
	err = CheckTraversable(target, stranger)
	var te *TraverseError
	if !errors.As(err, &te) || te.Blocker != private {
		// A parent of t.TempDir() may already stop a stranger; that is
		// still a refusal, just earlier.
		if te == nil {
			t.Fatalf("stranger: %v, want a refusal", err)
		}
	}
	if uid != 0 {
		if err := CheckTraversable(target, Account{Name: me.Username, UID: uint32(uid)}); err != nil {
			t.Errorf("owner refused: %v", err)
		}
	}
}
