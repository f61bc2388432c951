package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

// TestCopy is the story of moving data in and out of an instance without
// SSH: a 1 GiB file goes in and comes back with the same digest while the
// daemon's memory stays flat (the bytes are streamed, never held), a
// directory goes in and out with its modes and its owner in the guest,
// stdin and stdout work as ends, wrong paths and a full guest disk are
// refused with nothing left behind, another user is refused, and every
// copy is in the audit log with its direction, path and size.
func TestCopy(t *testing.T) {
	image := requireHost(t)
	binariesReadableByAll(t)
	group := "lvc" + randHex(3)
	testGroup(t, group)
	carol := testUser(t, group+"-carol", group)
	d := startDaemon(t, "--socket-group", group)
	d.must("image", "import", "tiny", image, "--sha256", readSHA256(t, image))
	d.must("role", "assign", carol.name, "contributor")
	// 4 GiB of memory: the 1 GiB file lands in a tmpfs, since the test
	// image's root file system is 512 MiB.
	d.must("create", "box", "--image", "tiny", "--size", "Standard_B2s")
	var inst api.Instance
	d.jsonOut(&inst, "show", "box")
	user := inst.GuestUser
	if user == "" {
		t.Fatalf("box has no guest user: %+v", inst)
	}
	home := "/home/" + user
	gexec := func(args ...string) string {
		t.Helper()
		return d.must(append([]string{"exec", "box", "--"}, args...)...)
	}
	dir := t.TempDir()

	d.chapter(t, "a 1 GiB file goes in and out with the same sha256 while the daemon's RSS stays bounded", func(t *testing.T) {
		gexec("sh", "-c", "mkdir -p "+home+"/big && mount -t tmpfs -o size=1100m tmpfs "+home+"/big")
		src := filepath.Join(dir, "big.bin")
		sum := writeRandomFile(t, src, 1<<30)
		rss := sampleRSS(t, d.cmd.Process.Pid)

		start := time.Now()
		d.must("cp", src, "box:~/big/")
		in := time.Since(start)
		if got := strings.Fields(gexec("sha256sum", home+"/big/big.bin"))[0]; got != sum {
			t.Fatalf("sha256 in the guest %s, want %s", got, sum)
		}
		if owner := strings.TrimSpace(gexec("stat", "-c", "%U", home+"/big/big.bin")); owner != user {
			t.Fatalf("big.bin is owned by %q in the guest, want %q", owner, user)
		}
		back := filepath.Join(dir, "back.bin")
		start = time.Now()
		d.must("cp", "box:big/big.bin", back)
		out := time.Since(start)
		maxRSS := rss()
		if got := fileSHA256(t, back); got != sum {
			t.Fatalf("sha256 of the copy out %s, want %s", got, sum)
		}
		mb := float64(1<<30) / 1e6
		t.Logf("1 GiB in: %s (%.1f MB/s); out: %s (%.1f MB/s); labvmd max RSS during the copies: %d MB",
			in.Round(time.Millisecond), mb/in.Seconds(), out.Round(time.Millisecond), mb/out.Seconds(), maxRSS>>20)
		if maxRSS > 200<<20 {
			t.Fatalf("labvmd's RSS reached %d MB during the copies: the file is not streamed", maxRSS>>20)
		}
		gexec("sh", "-c", "rm -f "+home+"/big/big.bin; umount "+home+"/big")
		_ = os.Remove(src)
		_ = os.Remove(back)
	})

	d.chapter(t, "a directory goes in and out with -r, keeping modes, owned by the instance's user", func(t *testing.T) {
		tree := filepath.Join(dir, "proj")
		mustWrite(t, filepath.Join(tree, "run.sh"), "#!/bin/sh\necho hi\n", 0o755)
		mustWrite(t, filepath.Join(tree, "data", "secret.txt"), "s3cret\n", 0o600)
		mustWrite(t, filepath.Join(tree, "data", "deep", "notes.md"), "# notes\n", 0o644)
		if err := os.Chmod(filepath.Join(tree, "data"), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("data/deep/notes.md", filepath.Join(tree, "notes")); err != nil {
			t.Fatal(err)
		}
		d.must("cp", "-r", tree, "box:~/")
		got := gexec("sh", "-c", "cd "+home+"/proj && stat -c '%n %a %U' run.sh data data/secret.txt data/deep/notes.md . && readlink notes && cat data/secret.txt")
		for _, want := range []string{"run.sh 755 " + user, "data 750 " + user, "data/secret.txt 600 " + user, "data/deep/notes.md 644 " + user, ". 755 " + user, "data/deep/notes.md\n", "s3cret"} {
			if !strings.Contains(got, want) {
				t.Fatalf("in the guest, want %q in:\n%s", want, got)
			}
		}
		if left := gexec("sh", "-c", "ls -a "+home+" /var/tmp | grep labvm-cp || true"); strings.TrimSpace(left) != "" {
			t.Fatalf("a copy left temporary files in the guest: %s", left)
		}
		d.mustFail("already exists", "cp", "-r", tree, "box:~/")

		gexec("chmod", "700", home+"/proj/data/deep")
		back := filepath.Join(dir, "results")
		d.must("cp", "-r", "box:~/proj", back)
		for p, want := range map[string]os.FileMode{"run.sh": 0o755, "data": 0o750 | os.ModeDir, "data/secret.txt": 0o600, "data/deep": 0o700 | os.ModeDir} {
			st, err := os.Stat(filepath.Join(back, p))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode() != want {
				t.Fatalf("%s came back with mode %s, want %s", p, st.Mode(), want)
			}
		}
		if b, err := os.ReadFile(filepath.Join(back, "notes")); err != nil || string(b) != "# notes\n" {
			t.Fatalf("the symlink notes came back as %q, %v", b, err)
		}
		entries, _ := filepath.Glob(filepath.Join(dir, ".*labvm-cp*"))
		if len(entries) > 0 {
			t.Fatalf("the copy out left %v", entries)
		}
	})

	d.chapter(t, "standard input and output are ends of a copy", func(t *testing.T) {
		payload := strings.Repeat("stdin to guest\n", 1000)
		r := d.withInput(payload, "cp", "-", "box:/tmp/x")
		if r.code != 0 {
			t.Fatalf("cp - box:/tmp/x: exit %d: %s", r.code, r.stderr)
		}
		if out := d.must("cp", "box:/tmp/x", "-"); out != payload {
			t.Fatalf("cp box:/tmp/x - printed %d bytes, want the %d sent", len(out), len(payload))
		}
		if mode := strings.TrimSpace(gexec("stat", "-c", "%a %U", "/tmp/x")); mode != "644 "+user {
			t.Fatalf("/tmp/x from stdin: %q, want 644 %s", mode, user)
		}
	})

	d.chapter(t, "a copy cut short (the client killed midway) leaves nothing in the guest", func(t *testing.T) {
		src := filepath.Join(dir, "cut.bin")
		writeRandomFile(t, src, 256<<20)
		cmd := exec.Command(bins.labvm, "cp", "-q", src, "box:/tmp/cut.bin")
		cmd.Env = append(os.Environ(), d.cliEnv()...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		deadline := time.Now().Add(90 * time.Second)
		for {
			left := strings.TrimSpace(gexec("sh", "-c", "ls -a /tmp | grep -e labvm-cp -e cut.bin || true"))
			if left == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("90s after the client was killed, /tmp in the guest still holds %q", left)
			}
			time.Sleep(2 * time.Second)
		}
		_ = os.Remove(src)
		// It had begun: the audit log has it failed, with bytes moved.
		var entries []api.AuditEntry
		d.jsonOut(&entries, "audit", "--instance", "box")
		began := false
		for _, e := range entries {
			began = began || (e.Outcome == "failed" && strings.HasPrefix(e.Message, "in /tmp/cut.bin, ") && !strings.HasPrefix(e.Message, "in /tmp/cut.bin, 0 bytes"))
		}
		if !began {
			t.Fatalf("no failed copy of /tmp/cut.bin with bytes moved in the audit log: %+v", entries)
		}
	})

	d.chapter(t, "someone racing the daemon to the copy's port (connecting first, then stalling) cannot stop or steal a copy", func(t *testing.T) {
		// The rival runs in the guest and connects from the guest's own
		// address: to race the daemon it must see the listener appear,
		// which a peer instance could only do by scanning 20,000 ports,
		// far too slowly under TCG. The guest end drops a connection
		// from any address but the gateway's, a peer's included.
		// The guest end accepts only the gateway's address, which the
		// daemon dials from; the host's route to the guest picks the
		// same one.
		var vnet api.VNet
		d.jsonOut(&vnet, "network", "show", inst.VNet)
		gateway := ""
		for _, sn := range vnet.Subnets {
			if sn.Name == inst.Subnet {
				gateway = sn.Gateway
			}
		}
		if route, err := exec.Command("ip", "-o", "-4", "route", "get", inst.IP).CombinedOutput(); err != nil || gateway == "" || !strings.Contains(string(route), " src "+gateway+" ") {
			t.Fatalf("the host's route to %s does not use the gateway %q of %s/%s as source: %s %v", inst.IP, gateway, inst.VNet, inst.Subnet, route, err)
		}
		gexec("sh", "-c", `rm -f /tmp/rival.stop /tmp/rival.log; setsid sh -c "$1" rival "$2" </dev/null >/dev/null 2>&1 &`, "start", rivalScript, inst.IP)
		defer gexec("touch", "/tmp/rival.stop")
		src := filepath.Join(dir, "race.bin")
		sum := writeRandomFile(t, src, 2<<20)
		var reached, rounds int
		for rounds < 12 && (rounds < 3 || reached == 0) {
			rounds++
			d.must("cp", "-q", src, "box:/tmp/race.bin")
			if got := strings.Fields(gexec("sha256sum", "/tmp/race.bin"))[0]; got != sum {
				t.Fatalf("round %d: sha256 in the guest %s, want %s", rounds, got, sum)
			}
			back := filepath.Join(dir, "race-back.bin")
			d.must("cp", "-q", "box:/tmp/race.bin", back)
			if got := fileSHA256(t, back); got != sum {
				t.Fatalf("round %d: sha256 of the copy out %s, want %s", rounds, got, sum)
			}
			// Each line is a port and nc's exit: 0 when the guest end
			// had accepted the rival's connection, 1 when refused (the
			// daemon's connection was first).
			reached = 0
			log := gexec("sh", "-c", "sleep 4; cat /tmp/rival.log 2>/dev/null || true")
			for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
				if strings.HasSuffix(l, " 0") {
					reached++
				}
			}
			t.Logf("after %d rounds (%d copies) the rival reached the guest end first %d times:\n%s", rounds, 2*rounds, reached, log)
		}
		if reached == 0 {
			t.Fatalf("in %d rounds the rival never reached the guest end before the daemon: the race was not run", rounds)
		}
		_ = os.Remove(src)
	})

	d.chapter(t, "wrong paths are refused with what is wrong", func(t *testing.T) {
		local := filepath.Join(dir, "small.txt")
		mustWrite(t, local, "small\n", 0o644)
		d.mustFail("no such file or directory", "cp", "box:~/nope.txt", dir)
		d.mustFail("no such directory", "cp", local, "box:/nonexistent/dir/x")
		d.mustFail("is a directory", "cp", "box:~/proj", dir)
		d.mustFail("copy it with -r", "cp", filepath.Join(dir, "proj"), "box:~/")
		gexec("mkdir", "-p", home+"/target/small.txt")
		d.mustFail("is a directory", "cp", local, "box:~/target/")
		d.mustFail("~USER is not supported", "cp", local, "box:~root/x")
		d.mustFail("neither side is an instance", "cp", local, filepath.Join(dir, "y"))
		d.mustFail("name the file", "cp", "-", "box:~/")
	})

	d.chapter(t, "a full guest disk is refused and leaves nothing behind", func(t *testing.T) {
		gexec("sh", "-c", "mkdir -p /mnt/small && mount -t tmpfs -o size=1m tmpfs /mnt/small")
		src := filepath.Join(dir, "4m.bin")
		writeRandomFile(t, src, 4<<20)
		d.mustFail("disk is full", "cp", src, "box:/mnt/small/")
		if left := strings.TrimSpace(gexec("ls", "-A", "/mnt/small")); left != "" {
			t.Fatalf("the failed copy left %q in /mnt/small", left)
		}
		tree := filepath.Join(dir, "bigtree")
		mustWrite(t, filepath.Join(tree, "a.txt"), "a\n", 0o644)
		if err := os.Rename(src, filepath.Join(tree, "4m.bin")); err != nil {
			t.Fatal(err)
		}
		d.mustFail("disk is full", "cp", "-r", tree, "box:/mnt/small/")
		if left := strings.TrimSpace(gexec("ls", "-A", "/mnt/small")); left != "" {
			t.Fatalf("the failed directory copy left %q in /mnt/small", left)
		}
		gexec("umount", "/mnt/small")
	})

	d.chapter(t, "another user, even a contributor, may not copy", func(t *testing.T) {
		for _, args := range [][]string{{"cp", "box:/etc/hostname", "-"}, {"cp", "/etc/hostname", "box:/tmp/evil"}} {
			r := d.as(carol, args...)
			if r.code == 0 || !strings.Contains(r.stderr, "box is root's instance: only root may use") {
				t.Fatalf("labvm %v as %s: exit %d, want a refusal:\n%s", args, carol.name, r.code, r.stderr)
			}
		}
		if out := gexec("sh", "-c", "ls /tmp/evil 2>&1 || true"); !strings.Contains(out, "No such file") {
			t.Fatalf("/tmp/evil exists after a refused copy: %s", out)
		}
	})

	d.chapter(t, "every copy is in the audit log with its direction, path and bytes", func(t *testing.T) {
		var entries []api.AuditEntry
		d.jsonOut(&entries, "audit", "--instance", "box")
		var in, out, denied bool
		for _, e := range entries {
			switch {
			case strings.HasSuffix(e.Action, ":cp-in") && e.Outcome == "succeeded" && strings.Contains(e.Message, home+"/big/big.bin, 1073741824 bytes"):
				in = true
			case strings.HasSuffix(e.Action, ":cp-out") && e.Outcome == "succeeded" && strings.Contains(e.Message, home+"/big/big.bin, 1073741824 bytes"):
				out = true
			case strings.Contains(e.Action, ":cp-") && e.Outcome == "denied" && e.Caller == carol.name:
				denied = true
			}
		}
		if !in || !out || !denied {
			t.Fatalf("audit log lacks a copy in (%v), out (%v) or a refusal (%v):\n%+v", in, out, denied, entries)
		}
	})
}

// rivalScript watches the guest's listening TCP sockets and connects to
// each new one on a port a copy may use (40000-59999) at the address in
// $1, sending nothing for 3 s; it logs "PORT RC" to /tmp/rival.log, RC 0
// when the connection was accepted. It stops when /tmp/rival.stop
// exists.
const rivalScript = `ip=$1 seen=
while [ ! -e /tmp/rival.stop ]; do
	for f in /proc/net/tcp /proc/net/tcp6; do
		while read -r sl local rem st tx tr rt uid to ino rest; do
			[ "$st" = 0A ] || continue
			port=$((0x${local##*:}))
			[ "$port" -ge 40000 ] && [ "$port" -lt 60000 ] || continue
			case " $seen " in *" $ino "*) continue ;; esac
			seen="$seen $ino"
			( sleep 3 | busybox nc "$ip" "$port" >/dev/null 2>&1; echo "$port $?" >>/tmp/rival.log ) &
		done <"$f"
	done
done`

// withInput runs labvm as root with stdin.
func (d *labvmd) withInput(stdin string, args ...string) result {
	d.t.Helper()
	cmd := exec.Command(bins.labvm, args...)
	cmd.Env = append(os.Environ(), d.cliEnv()...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatalf("run labvm %v: %v", args, err)
	}
	return r
}

// writeRandomFile writes size bytes of /dev/urandom to p and returns
// their sha256.
func writeRandomFile(t *testing.T, p string, size int64) string {
	t.Helper()
	src, err := os.Open("/dev/urandom")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), src, size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func fileSHA256(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func mustWrite(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// sampleRSS samples pid's VmRSS every 100 ms until the returned function
// is called, which returns the largest value seen, in bytes.
func sampleRSS(t *testing.T, pid int) func() int64 {
	t.Helper()
	var peak atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if v := vmRSS(pid); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() int64 {
		close(done)
		wg.Wait()
		return peak.Load()
	}
}

func vmRSS(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
