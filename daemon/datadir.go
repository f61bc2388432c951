package daemon

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/user"
	"regexp"
	"strconv"
	"strings"

	"github.com/labvm/labvm/storage"
)

// qemuConf is where libvirt's QEMU driver names the user QEMU runs as.
const qemuConf = "/etc/libvirt/qemu.conf"

// localSystemURI reports whether uri is the local system QEMU driver,
// whose QEMU processes run as an unprivileged user that must reach the
// data dir's files by path.
func localSystemURI(uri string) bool {
	return uri == "qemu:///system" || strings.HasPrefix(uri, "qemu:///system?")
}

var qemuUserLine = regexp.MustCompile(`^\s*user\s*=\s*"([^"]*)"`)

// qemuAccount finds the account QEMU runs as: qemu.conf's user= if set,
// else the distribution defaults (Debian's libvirt-qemu, Fedora's qemu).
// ok is false when none of them exists on this host.
func qemuAccount(conf []byte) (acct storage.Account, ok bool, err error) {
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(conf))
	for sc.Scan() {
		if m := qemuUserLine.FindStringSubmatch(sc.Text()); m != nil {
			names = []string{m[1]}
		}
	}
	if names == nil {
		names = []string{"libvirt-qemu", "qemu"}
	}
	for _, name := range names {
		var u *user.User
		if uid, isUID := strings.CutPrefix(name, "+"); isUID {
			u, err = user.LookupId(uid)
		} else {
			u, err = user.Lookup(name)
		}
		if err != nil {
			continue
		}
		return accountOf(u)
	}
	return storage.Account{}, false, nil
}

func accountOf(u *user.User) (storage.Account, bool, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return storage.Account{}, false, fmt.Errorf("user %s: uid %q: %w", u.Username, u.Uid, err)
	}
	acct := storage.Account{Name: u.Username, UID: uint32(uid)}
	gids, err := u.GroupIds()
	if err != nil {
		gids = []string{u.Gid}
	}
	for _, g := range gids {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			acct.GIDs = append(acct.GIDs, uint32(n))
		}
	}
	return acct, true, nil
}

// checkDataDirReachable refuses a data dir the QEMU user cannot walk
// down to (a 0700 home or temp dir on the way): otherwise the daemon
// starts and the first create fails with libvirt's "Cannot access storage
// file … Permission denied". New runs it for the local system driver,
// before anything is created. When the QEMU user cannot be found (another
// distribution's naming) there is nothing to check against, and logf says
// so.
func checkDataDirReachable(dataDir string, logf func(msg string, args ...any)) error {
	conf, err := os.ReadFile(qemuConf)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("read %s: %w", qemuConf, err)
	}
	acct, ok, err := qemuAccount(conf)
	if err != nil {
		return err
	}
	if !ok {
		logf("cannot tell which user QEMU runs as (no user= in " + qemuConf + ", no libvirt-qemu or qemu account); data dir access not checked")
		return nil
	}
	if err := storage.CheckTraversable(dataDir, acct); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	return nil
}
