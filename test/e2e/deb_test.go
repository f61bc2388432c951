package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labvm/labvm/test/hostreq"
)

// TestDebianPackage tells an admin's install on a production host: `make
// deb` builds the package, lintian finds no error in it, dpkg installs it,
// the installed labvmd, started the way its units start it (the socket
// unit's path and name, the service's ExecStart), answers the installed
// labvm on the default socket, and `dpkg --purge` leaves nothing behind.
//
// It installs into the real /usr, /etc and /lib, so it refuses to run
// where labvm is installed already (a real installation is never
// touched), and it purges the package on every way out. The daemon's
// config (written to /etc/labvm/labvmd.yaml, as an admin would) gives it
// this test's own data dir, bridge, subnet and firewall table.
func TestDebianPackage(t *testing.T) {
	requireHost(t)
	activate := hostreq.RequireTool(t, "systemd-socket-activate", "systemd")
	hostreq.RequireTool(t, "lintian", "lintian")
	hostreq.RequireTool(t, "dpkg-shlibdeps", "dpkg-dev")

	// One package test at a time on this host; never over a real install.
	lock, err := os.OpenFile("/run/lock/labvm-deb-e2e.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Skip("another package test holds /run/lock/labvm-deb-e2e.lock")
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "labvm").Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Skipf("the labvm package is installed on this host (%s); this test never touches a real installation", out)
	}
	// /run/labvm itself may hold other labvmd's runtime files (development
	// daemons on this host); only the unit's socket path must be free.
	for _, p := range []string{"/usr/sbin/labvmd", "/usr/bin/labvm", "/etc/labvm", "/var/lib/labvm", "/run/labvm/labvm.sock"} {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("%s exists: labvm is installed here by other means; this test never touches a real installation", p)
		}
	}
	groupBefore := exec.Command("getent", "group", "labvm").Run() == nil

	d := newDaemon(t) // the private names, and their cleanup
	work := filepath.Dir(d.socket)

	var deb string
	d.chapter(t, "make deb builds the package and lintian finds no error", func(t *testing.T) {
		out := filepath.Join(work, "out")
		run(t, "make", "-C", "../..", "deb", "DEB_OUT="+out) // lintian included: errors and warnings fail it
		debs, err := filepath.Glob(filepath.Join(out, "labvm_*_amd64.deb"))
		if err != nil || len(debs) != 1 {
			t.Fatalf("make deb made %v (%v), want one labvm_<version>_amd64.deb", debs, err)
		}
		deb = debs[0]
		lint := exec.Command("lintian", "--fail-on", "error", deb)
		if out, err := lint.CombinedOutput(); err != nil {
			t.Fatalf("lintian: %v\n%s", err, out)
		}
	})
	if deb == "" {
		t.FailNow()
	}

	var daemon *exec.Cmd
	var exited chan struct{}
	stopDaemon := func() {
		if daemon == nil {
			return
		}
		_ = daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = daemon.Process.Kill()
			<-exited
		}
		daemon = nil
	}
	installed := false
	t.Cleanup(func() {
		stopDaemon()
		if installed {
			if out, err := exec.Command("dpkg", "--purge", "labvm").CombinedOutput(); err != nil {
				t.Errorf("cleanup: dpkg --purge labvm: %v\n%s", err, out)
			}
		}
		// Whatever a failure left: nothing here existed before the test.
		for _, p := range []string{"/etc/labvm", "/var/lib/labvm", "/run/labvm/labvm.sock"} {
			_ = os.RemoveAll(p)
		}
		_ = os.Remove("/run/labvm") // only if empty: others may use it
		if !groupBefore && exec.Command("getent", "group", "labvm").Run() == nil {
			_ = exec.Command("groupdel", "labvm").Run()
		}
	})

	var files []string
	d.chapter(t, "dpkg -i installs it: binaries, units, the labvm group, the example config", func(t *testing.T) {
		installed = true // from here on, cleanup purges
		run(t, "dpkg", "-i", deb)
		for _, p := range []string{"/usr/sbin/labvmd", "/usr/bin/labvm", "/lib/systemd/system/labvmd.service",
			"/lib/systemd/system/labvmd.socket", "/lib/systemd/system/labvm-guests.service", "/etc/labvm/labvmd.yaml.example",
			"/usr/share/man/man8/labvmd.8.gz", "/usr/share/man/man1/labvm-create.1.gz", "/usr/share/bash-completion/completions/labvm"} {
			if _, err := os.Stat(p); err != nil {
				t.Errorf("after dpkg -i: %v", err)
			}
		}
		if err := exec.Command("getent", "group", "labvm").Run(); err != nil {
			t.Errorf("no labvm group after dpkg -i")
		}
		for _, l := range strings.Split(run(t, "dpkg", "-L", "labvm"), "\n") {
			// Regular files only: with merged /usr, dpkg also lists /lib,
			// a symlink that is the host's, not the package's.
			if fi, err := os.Lstat(l); err == nil && fi.Mode().IsRegular() {
				files = append(files, l)
			}
		}
		if len(files) < 10 {
			t.Errorf("dpkg -L labvm lists %d files: %v", len(files), files)
		}
	})

	d.chapter(t, "the installed labvmd, started as its units start it, answers labvm info on the unit's socket", func(t *testing.T) {
		execStart := unitValue(t, "/lib/systemd/system/labvmd.service", "ExecStart")
		listen := unitValue(t, "/lib/systemd/system/labvmd.socket", "ListenStream")
		fdName := unitValue(t, "/lib/systemd/system/labvmd.socket", "FileDescriptorName")
		if execStart != "/usr/sbin/labvmd" || listen != "/run/labvm/labvm.sock" {
			t.Fatalf("units: ExecStart=%s ListenStream=%s", execStart, listen)
		}
		// As an admin would: the config names this host's own choices.
		cfg := fmt.Sprintf("data_dir: %s\naccelerator: tcg\nphone_home_port: 0\nfirewall_table: %s\ndefault_vnet:\n  bridge: %s\n  subnet: %s\n",
			d.dataDir, d.table, d.bridge, d.subnet)
		if err := os.WriteFile("/etc/labvm/labvmd.yaml", []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(listen), 0o755); err != nil { // DirectoryMode=0755
			t.Fatal(err)
		}
		args := append([]string{"-l", listen, "--fdname=" + fdName}, strings.Fields(execStart)...)
		daemon = exec.Command(activate, args...)
		d.logs = &bytes.Buffer{} // shown by the harness if the test fails
		logs := d.logs
		daemon.Stdout, daemon.Stderr = logs, logs
		daemon.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := daemon.Start(); err != nil {
			t.Fatal(err)
		}
		exited = make(chan struct{})
		go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(daemon, exited)

		// The installed CLI with no socket given: the default path.
		var out []byte
		deadline := time.Now().Add(60 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cli := exec.CommandContext(ctx, "/usr/bin/labvm", "info")
			cli.Env = withoutEnv(os.Environ(), "LABVM_SOCKET")
			out, err = cli.CombinedOutput()
			cancel()
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("labvm info: %v\n%s\nlabvmd:\n%s", err, out, logs.String())
		}
		version := strings.TrimSpace(run(t, "/usr/sbin/labvmd", "--version"))
		if !strings.Contains(string(out), "Daemon:") || !strings.Contains(string(out), strings.TrimPrefix(version, "labvmd ")) {
			t.Errorf("labvm info does not show the installed daemon (%s):\n%s", version, out)
		}
		stopDaemon()
	})

	d.chapter(t, "dpkg --purge removes every file, the group it made and its directories", func(t *testing.T) {
		run(t, "dpkg", "--purge", "labvm")
		installed = false
		if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "labvm").Output(); err == nil && strings.Contains(string(out), "installed") {
			t.Errorf("labvm still installed after purge: %s", out)
		}
		for _, f := range files {
			if _, err := os.Lstat(f); err == nil {
				t.Errorf("%s left after purge", f)
			}
		}
		for _, p := range []string{"/etc/labvm", "/var/lib/labvm", "/run/labvm/labvm.sock",
			"/etc/systemd/system/sockets.target.wants/labvmd.socket", "/etc/systemd/system/multi-user.target.wants/labvmd.service",
			"/etc/systemd/system/multi-user.target.wants/labvm-guests.service"} {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s left after purge", p)
			}
		}
		groupAfter := exec.Command("getent", "group", "labvm").Run() == nil
		if groupAfter != groupBefore {
			t.Errorf("labvm group exists after purge: %v, before install: %v (purge removes only the group it made)", groupAfter, groupBefore)
		}
	})

	if !groupBefore {
		d.chapter(t, "a labvm group the admin made before is kept at purge", func(t *testing.T) {
			run(t, "groupadd", "--system", "labvm") // removed by the cleanup above if left
			installed = true
			run(t, "dpkg", "-i", deb)
			run(t, "dpkg", "--purge", "labvm")
			installed = false
			if err := exec.Command("getent", "group", "labvm").Run(); err != nil {
				t.Errorf("purge removed a labvm group the package did not make")
			}
			run(t, "groupdel", "labvm")
		})
	}
}

// run runs a command and fails the test unless it exits 0.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// unitValue reads key= from a unit file (the last assignment wins, as in
// systemd).
func unitValue(t *testing.T, path, key string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	val := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), key+"="); ok {
			val = v
		}
	}
	if val == "" {
		t.Fatalf("%s has no %s=", path, key)
	}
	return val
}

func withoutEnv(env []string, key string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// TestDebianVersion: what git describe says becomes a Debian version that
// dpkg accepts and that sorts as the commits do.
func TestDebianVersion(t *testing.T) {
	tests := []struct{ describe, want string }{
		{"v1.2.0", "1.2.0"},
		{"1.2.0", "1.2.0"},
		{"v1.2.0-5-gabc1234", "1.2.0+git5.gabc1234"},
		{"v1.2.0-5-gabc1234-dirty", "1.2.0+git5.gabc1234+dirty"},
		{"45ec694", "0~git20231114.45ec694"},
		{"45ec694-dirty", "0~git20231114.45ec694+dirty"},
	}
	for _, tt := range tests {
		cmd := exec.Command("bash", "../../systemd/deb/build.sh", "--debian-version", tt.describe)
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", tt.describe, err, out)
			continue
		}
		if got := strings.TrimSpace(string(out)); got != tt.want {
			t.Errorf("debian_version(%s) = %s, want %s", tt.describe, got, tt.want)
		}
	}
	for _, bad := range []string{"release-candidate", ""} {
		cmd := exec.Command("bash", "../../systemd/deb/build.sh", "--debian-version", bad)
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("debian_version(%q) = %s, want a refusal", bad, out)
		}
	}
	// dpkg's own order: a tagged release sorts above the untagged builds
	// before it, and later commits above it.
	order := []string{"0~git20231114.45ec694-1", "1.2.0-1", "1.2.0+git5.gabc1234-1", "1.3.0-1"}
	for i := 1; i < len(order); i++ {
		if err := exec.Command("dpkg", "--compare-versions", order[i-1], "lt", order[i]).Run(); err != nil {
			t.Errorf("dpkg does not sort %s below %s", order[i-1], order[i])
		}
	}
}
