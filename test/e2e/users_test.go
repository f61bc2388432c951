package e2e

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"testing"
	"time"
)

// unixUser is a real account made for one test and removed after it.
type unixUser struct {
	name     string
	uid, gid int
}

// testGroup creates a Unix group that is removed when the test ends.
func testGroup(t *testing.T, name string) {
	t.Helper()
	if out, err := exec.Command("groupadd", name).CombinedOutput(); err != nil {
		t.Fatalf("groupadd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("groupdel", name).Run() })
}

// testUser creates a Unix user whose primary group is primary, also in
// the extra groups, removed when the test ends.
func testUser(t *testing.T, name, primary string, extra ...string) unixUser {
	t.Helper()
	args := []string{"--no-create-home", "--no-user-group", "--gid", primary, "--shell", "/usr/sbin/nologin"}
	for _, g := range extra {
		args = append(args, "--groups", g)
	}
	if out, err := exec.Command("useradd", append(args, name)...).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return unixUser{name: name, uid: uid, gid: gid}
}

// as runs the real labvm binary as u against this daemon.
func (d *labvmd) as(u unixUser, args ...string) result {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	full := append([]string{"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--init-groups", bins.labvm}, args...)
	cmd := exec.CommandContext(ctx, "setpriv", full...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LABVM_SOCKET=" + d.socket, "HOME=/nonexistent"}
	out, errb := &bytesBuffer{}, &bytesBuffer{}
	cmd.Stdout, cmd.Stderr = out, errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatalf("run labvm as %s: %v", u.name, err)
	}
	return r
}

// binariesReadableByAll lets test users execute the built binaries.
func binariesReadableByAll(t *testing.T) {
	t.Helper()
	if err := os.Chmod(bins.dir, 0o755); err != nil {
		t.Fatal(err)
	}
}
