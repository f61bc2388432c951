package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/storage/dataset"
)

// TestDatasets is the lab's shared data: an owner declares a host
// directory as a dataset; Bob's instance, created with it, reads it at
// /datasets/NAME; his guest's root cannot write there, create device or
// setuid files, remount it writable, or reach host files beside it; the
// dataset is back after a stop and start and after labvmd restarts; it
// cannot be removed while his instance exists; a start whose directory
// is gone fails and says why, leaving nothing mounted; when his guest
// powers itself off, labvm shows it Stopped (done by "guest") and its
// mounts go, and a start brings them back. labvmd runs in a mount
// namespace of its own, as under systemd.
func TestDatasets(t *testing.T) {
	image := requireHost(t)
	binariesReadableByAll(t)
	p := "lvt" + randHex(3)
	sock := p + "sock"
	testGroup(t, sock)
	carol := testUser(t, p+"-carol", sock)
	olivia := testUser(t, p+"-olivia", sock)
	// labvmd runs in a mount namespace of its own, as systemd's
	// ProtectSystem= gives labvmd.service one: its dataset mounts must
	// still be made where libvirtd's virtiofsd sees them, at every boot
	// (the stop/start, restart and power-off chapters below). Under
	// systemd that is PID 1's namespace; here PID 1's may not be joined,
	// so labvmd is pointed at this test's, which is libvirtd's.
	d := newDaemon(t, "--socket-group", sock, "--test-host-mount-ns", fmt.Sprintf("/proc/%d/ns/mnt", os.Getpid()))
	d.wrap = []string{"unshare", "--mount", "--propagation", "slave"}
	d.start()
	name := "ds-" + randHex(3)

	// The host side: a directory with a file, and beside it a secret
	// no guest may ever read through the share.
	root, err := os.MkdirTemp("/var/tmp", "labvm-e2e-ds-")
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(root, "data")
	secret := "host-secret-" + randHex(8)
	for _, f := range []struct {
		path, body string
		mode       os.FileMode
	}{
		{filepath.Join(src, "hello.txt"), "hello from the host\n", 0o644},
		{filepath.Join(src, "sub", "nested.txt"), "nested\n", 0o644},
		{filepath.Join(root, "outside.txt"), secret + "\n", 0o644},
	} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, []byte(f.body), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	// Links that point out of the dataset: a guest resolves them in its
	// own tree, never the host's.
	if err := os.Symlink(filepath.Join(root, "outside.txt"), filepath.Join(src, "abs-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../outside.txt", filepath.Join(src, "rel-link")); err != nil {
		t.Fatal(err)
	}
	mounts := dataset.Mounts{Root: filepath.Join(d.dataDir, "datasets")}
	t.Cleanup(func() {
		// After labvmd and the domains are gone, so nothing mounts again;
		// before the harness removes the data dir.
		d.kill()
		d.destroyOurDomains()
		ids, _ := mounts.Instances()
		for _, id := range ids {
			if err := mounts.Release(id); err != nil {
				t.Errorf("release leftover mounts of %s: %v", id, err)
			}
		}
		_ = os.RemoveAll(root)
	})

	d.must("image", "import", "tiny", image, "--sha256", readSHA256(t, image))

	d.chapter(t, "an owner declares the dataset; bad ones are refused", func(t *testing.T) {
		out := d.must("dataset", "add", name, src)
		if !strings.Contains(out, "/datasets/"+name) {
			t.Errorf("add says: %q", out)
		}
		d.mustFail("already exists", "dataset", "add", name, src)
		d.mustFail("invalid dataset name", "dataset", "add", "Bad/Name", src)
		d.mustFail("not a directory", "dataset", "add", "ds-file", filepath.Join(src, "hello.txt"))
		d.mustFail("no such file", "dataset", "add", "ds-missing", filepath.Join(root, "missing"))
		d.mustFail("data dir", "dataset", "add", "ds-data", d.dataDir)
		var list []api.Dataset
		d.jsonOut(&list, "dataset", "list")
		if len(list) != 1 || list[0].Name != name || list[0].Path != src || len(list[0].UsedBy) != 0 {
			t.Fatalf("dataset list: %+v", list)
		}
	})

	d.chapter(t, "only owners declare and remove datasets; contributors list them", func(t *testing.T) {
		d.must("role", "assign", carol.name, "contributor")
		d.must("role", "assign", olivia.name, "owner")
		for _, args := range [][]string{{"dataset", "add", "ds-carol", src}, {"dataset", "remove", name}} {
			r := d.as(carol, args...)
			if r.code == 0 || !strings.Contains(r.stderr, "lacks datasets/write") {
				t.Errorf("contributor %v: exit %d\n%s", args, r.code, r.stderr)
			}
		}
		r := d.as(carol, "dataset", "list")
		if r.code != 0 || !strings.Contains(r.stdout, name) {
			t.Errorf("contributor's dataset list: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if r := d.as(olivia, "dataset", "add", "ds-olivia", src); r.code != 0 {
			t.Errorf("owner's dataset add: exit %d\n%s", r.code, r.stderr)
		}
		if r := d.as(olivia, "dataset", "remove", "ds-olivia"); r.code != 0 {
			t.Errorf("owner's dataset remove: exit %d\n%s", r.code, r.stderr)
		}
	})

	d.chapter(t, "a create with an unknown dataset is refused and makes nothing", func(t *testing.T) {
		d.mustFail(`unknown dataset "nope-ds"`, "create", "bob-bad", "--image", "tiny", "--size", "Standard_B1s", "--dataset", "nope-ds")
		d.mustFail("given twice", "create", "bob-bad", "--image", "tiny", "--size", "Standard_B1s", "--dataset", name, "--dataset", name)
		if out := d.must("list"); strings.Contains(out, "bob-bad") {
			t.Errorf("a refused create left an instance:\n%s", out)
		}
		if dirs := d.instanceDirs(); len(dirs) != 0 {
			t.Errorf("a refused create left files: %v", dirs)
		}
	})

	var inst api.Instance
	d.chapter(t, "Bob's instance reads the dataset", func(t *testing.T) {
		d.must("create", "bob-dev", "--image", "tiny", "--size", "Standard_B1s", "--dataset", name)
		d.jsonOut(&inst, "show", "bob-dev")
		if !slices.Equal(inst.Datasets, []string{name}) {
			t.Errorf("show: datasets %v", inst.Datasets)
		}
		if out := d.must("show", "bob-dev"); !strings.Contains(out, name+" (read-only at /datasets/"+name+")") {
			t.Errorf("show does not list the dataset:\n%s", out)
		}
		if out := d.must("exec", "bob-dev", "--", "cat", "/datasets/"+name+"/hello.txt", "/datasets/"+name+"/sub/nested.txt"); out != "hello from the host\nnested\n" {
			t.Errorf("cat in the guest: %q", out)
		}
		// On the host: one mount for the instance, read-only, nosuid, nodev.
		opts, ok, err := dataset.MountOptions(mounts.Path(inst.ID, name))
		if err != nil || !ok {
			t.Fatalf("no host mount at %s: %v", mounts.Path(inst.ID, name), err)
		}
		for _, o := range []string{"ro", "nosuid", "nodev"} {
			if !slices.Contains(opts, o) {
				t.Errorf("host mount options %v lack %s", opts, o)
			}
		}
		var list []api.Dataset
		d.jsonOut(&list, "dataset", "list")
		if len(list) != 1 || !slices.Equal(list[0].UsedBy, []string{"bob-dev"}) {
			t.Errorf("dataset list: %+v", list)
		}
	})

	dir := "/datasets/" + name
	d.chapter(t, "the guest's root can neither write, nor mknod, nor setuid, nor remount it writable", func(t *testing.T) {
		for _, tc := range []struct {
			what string
			cmd  string
		}{
			{"write a new file", "echo x > " + dir + "/new.txt"},
			{"append to a file", "echo x >> " + dir + "/hello.txt"},
			{"truncate a file", ": > " + dir + "/hello.txt"},
			{"remove a file", "rm " + dir + "/hello.txt"},
			{"rename a file", "mv " + dir + "/hello.txt " + dir + "/moved.txt"},
			{"make a directory", "mkdir " + dir + "/newdir"},
			{"mknod a device", "mknod " + dir + "/null c 1 3"},
			{"setuid an existing file", "chmod u+s " + dir + "/hello.txt"},
			{"chown a file", "chown 0:0 " + dir + "/sub"},
			{"touch a file", "touch " + dir + "/hello.txt"},
			// The guest's own ro is the guest's to lift; the host's is not.
			{"remount rw, then write", "mount -o remount,rw,suid,dev " + dir + " ; echo x > " + dir + "/new.txt"},
			{"remount rw, then mknod", "mount -o remount,rw " + dir + " ; mknod " + dir + "/null c 1 3"},
			{"remount rw, then setuid", "mount -o remount,rw,suid " + dir + " ; chmod 4755 " + dir + "/hello.txt"},
		} {
			r := d.labvm("exec", "bob-dev", "--", "sh", "-c", tc.cmd)
			if r.code == 0 {
				t.Errorf("%s as root in the guest succeeded (%q)", tc.what, r.stdout)
			} else if !strings.Contains(r.stderr, "Read-only file system") {
				t.Errorf("%s as root in the guest failed, but not as read-only: %s", tc.what, r.stderr)
			}
		}
		// The remounts above did make the guest's mount writable: the
		// refusals came from the host.
		if out := d.must("exec", "bob-dev", "--", "sh", "-c", "grep ' "+dir+" ' /proc/mounts"); !strings.Contains(out, " rw,") {
			t.Errorf("the guest's remount did not take, so the test proves less: %q", out)
		}
		// Nothing changed on the host.
		b, err := os.ReadFile(filepath.Join(src, "hello.txt"))
		if err != nil || string(b) != "hello from the host\n" {
			t.Errorf("host file after the attempts: %q, %v", b, err)
		}
		fi, err := os.Stat(filepath.Join(src, "hello.txt"))
		if err != nil || fi.Mode() != 0o644 {
			t.Errorf("host file mode after the attempts: %v, %v", fi.Mode(), err)
		}
		for _, p := range []string{"new.txt", "null", "newdir", "moved.txt"} {
			if _, err := os.Lstat(filepath.Join(src, p)); err == nil {
				t.Errorf("%s appeared in the host directory", p)
			}
		}
		// The guest still reads it.
		if out := d.must("exec", "bob-dev", "--", "cat", dir+"/hello.txt"); out != "hello from the host\n" {
			t.Errorf("cat after the attempts: %q", out)
		}
	})

	d.chapter(t, "nothing outside the dataset is reachable through it", func(t *testing.T) {
		shadow, _ := os.ReadFile("/etc/shadow")
		for _, p := range []string{
			dir + "/../outside.txt", dir + "/../../outside.txt",
			dir + "/abs-link", dir + "/rel-link",
			dir + "/../../etc/shadow", dir + "/../../../../etc/shadow",
		} {
			r := d.labvm("exec", "bob-dev", "--", "cat", p)
			if strings.Contains(r.stdout, secret) {
				t.Errorf("cat %s in the guest read the host file beside the dataset", p)
			}
			if len(shadow) > 0 && r.stdout == string(shadow) {
				t.Errorf("cat %s in the guest read the host's /etc/shadow", p)
			}
		}
		r := d.labvm("exec", "bob-dev", "--", "sh", "-c", "grep -rs "+secret+" "+dir+"/ "+dir+"/.. 2>/dev/null | head -1")
		if strings.Contains(r.stdout, secret) {
			t.Errorf("the secret is reachable in the guest: %q", r.stdout)
		}
	})

	d.chapter(t, "a dataset in use cannot be removed, running or stopped", func(t *testing.T) {
		d.mustFail("bob-dev", "dataset", "remove", name)
		d.must("stop", "bob-dev")
		d.mustFail("in use by 1 instance(s): bob-dev", "dataset", "remove", name)
		if _, err := os.Stat(mounts.Dir(inst.ID)); !os.IsNotExist(err) {
			t.Errorf("host mounts of a stopped instance are still there: %v", err)
		}
	})

	d.chapter(t, "the dataset is there again after stop and start", func(t *testing.T) {
		d.must("start", "bob-dev")
		if out := d.must("exec", "bob-dev", "--", "cat", dir+"/hello.txt"); out != "hello from the host\n" {
			t.Errorf("cat after start: %q", out)
		}
		if r := d.labvm("exec", "bob-dev", "--", "sh", "-c", "echo x > "+dir+"/new.txt"); r.code == 0 {
			t.Errorf("write after start succeeded")
		}
	})

	d.chapter(t, "labvmd stops and starts under a running guest", func(t *testing.T) {
		d.stop()
		if ids, _ := mounts.Instances(); len(ids) != 0 {
			t.Errorf("host mounts left after labvmd stopped: %v", ids)
		}
		d.start()
		// The guest's virtiofsd holds its own copy of the mount.
		if out := d.must("exec", "bob-dev", "--", "cat", dir+"/hello.txt"); out != "hello from the host\n" {
			t.Errorf("cat after labvmd restarted: %q", out)
		}
		if r := d.labvm("exec", "bob-dev", "--", "sh", "-c", "mount -o remount,rw "+dir+"; echo x > "+dir+"/new.txt"); r.code == 0 {
			t.Errorf("write after labvmd restarted succeeded")
		}
	})

	d.chapter(t, "a start whose directory is gone fails, says why and mounts nothing", func(t *testing.T) {
		d.must("stop", "bob-dev")
		moved := src + ".moved"
		if err := os.Rename(src, moved); err != nil {
			t.Fatal(err)
		}
		r := d.mustFail("dataset directory missing", "start", "bob-dev")
		if !strings.Contains(r.stderr, src) {
			t.Errorf("the error does not name the directory %s:\n%s", src, r.stderr)
		}
		d.jsonOut(&inst, "show", "bob-dev")
		if inst.State != api.StateStopped {
			t.Errorf("state after the failed start: %s", inst.State)
		}
		if ids, _ := mounts.Instances(); len(ids) != 0 {
			t.Errorf("a failed start left mounts: %v", ids)
		}
		if doms := d.domains(); len(doms) != 0 {
			t.Errorf("a failed start left domains: %v", doms)
		}
		d.mustFail("dataset directory missing", "create", "bob-two", "--image", "tiny", "--size", "Standard_B1s", "--dataset", name)
		if err := os.Rename(moved, src); err != nil {
			t.Fatal(err)
		}
		d.must("start", "bob-dev")
		if out := d.must("exec", "bob-dev", "--", "cat", dir+"/hello.txt"); out != "hello from the host\n" {
			t.Errorf("cat after the directory came back: %q", out)
		}
	})

	d.chapter(t, "the guest powers itself off: labvm shows Stopped, the mounts are gone, and start brings them back", func(t *testing.T) {
		d.jsonOut(&inst, "show", "bob-dev")
		if _, ok, err := dataset.MountOptions(mounts.Path(inst.ID, name)); err != nil || !ok {
			t.Fatalf("no host mount before the poweroff, so the test proves nothing: %v", err)
		}
		// A job runs when the guest goes: it must not stay "running".
		d.must("job", "submit", "bob-dev", "--", "sleep", "600")
		d.jobStates("bob-dev", time.Minute, api.JobRunning)
		// busybox's poweroff signals init and returns; the agent may die
		// before exec hears back, so only the outcome below counts.
		r := d.labvm("exec", "bob-dev", "--", "poweroff")
		t.Logf("exec poweroff: exit %d %s", r.code, strings.TrimSpace(r.stderr))
		start := time.Now()
		waitFor(t, 90*time.Second, "bob-dev to show Stopped after its guest powered off", func() bool {
			d.jsonOut(&inst, "show", "bob-dev")
			return inst.State == api.StateStopped
		})
		t.Logf("Stopped %s after the guest's poweroff", time.Since(start).Round(100*time.Millisecond))
		if !strings.Contains(inst.StateReason, "the guest powered itself off") || !strings.Contains(inst.StateReason, "labvm start bob-dev") {
			t.Errorf("state reason: %q", inst.StateReason)
		}
		if inst.IP == "" {
			t.Errorf("the address went with the poweroff; a stop keeps it")
		}
		if doms := d.domains(); len(doms) != 0 {
			t.Errorf("domains after the guest's poweroff: %v", doms)
		}
		if _, err := os.Stat(mounts.Dir(inst.ID)); !os.IsNotExist(err) {
			t.Errorf("host mounts of the powered-off instance are still there: %v", err)
		}
		if ids, _ := mounts.Instances(); len(ids) != 0 {
			t.Errorf("mounts left after the guest's poweroff: %v", ids)
		}
		jobs := d.jobStates("bob-dev", 30*time.Second, anyEnded)
		t.Logf("the job after the guest's poweroff: %s (%s)", jobs.Jobs[0].State, jobs.Jobs[0].Reason)
		// It was the guest that shut down, and `labvm logs` tells so.
		if out := d.must("logs", "bob-dev"); !strings.Contains(out, "labvm-test-image: shutting down") {
			t.Errorf("the console log does not show the guest shutting down:\n%s", tail([]byte(out), 600))
		}
		// An ordinary stop operation, done by "guest".
		var opsList []api.Operation
		d.jsonOut(&opsList, "operations", "--instance", "bob-dev")
		found := false
		for _, op := range opsList {
			if op.Caller == "guest" && op.Target == "bob-dev" && op.Kind == api.OpStop && op.Status == api.OperationSucceeded {
				found = true
			}
		}
		if !found {
			t.Errorf("no succeeded stop of bob-dev by guest in `labvm operations`: %+v", opsList)
		}
		d.must("start", "bob-dev")
		if out := d.must("exec", "bob-dev", "--", "cat", dir+"/hello.txt"); out != "hello from the host\n" {
			t.Errorf("cat after start: %q", out)
		}
		if _, ok, err := dataset.MountOptions(mounts.Path(inst.ID, name)); err != nil || !ok {
			t.Errorf("no host mount after start: %v", err)
		}
	})

	d.chapter(t, "once the instance is deleted the dataset can be removed", func(t *testing.T) {
		d.must("delete", "bob-dev", "--yes")
		if ids, _ := mounts.Instances(); len(ids) != 0 {
			t.Errorf("mounts left after delete: %v", ids)
		}
		d.must("dataset", "remove", name)
		if _, err := os.Stat(filepath.Join(src, "hello.txt")); err != nil {
			t.Errorf("remove touched the host directory: %v", err)
		}
		var list []api.Dataset
		d.jsonOut(&list, "dataset", "list")
		if len(list) != 0 {
			t.Errorf("dataset list after remove: %+v", list)
		}
	})
}
