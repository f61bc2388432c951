package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// copyFigures times `labvm cp` in and out of a booted guest against ssh
// through `labvm ssh-config`'s ProxyCommand (the same tunnel `labvm ssh`
// uses) moving the same file in the same run: scp when the guest has an
// scp or sftp server, else `ssh NAME 'cat > F'` and `ssh NAME cat F`, the
// same bytes over the same channel (the test image's dropbear has no scp).
func (e *env) copyFigures() error {
	r := e.report
	d, err := e.startDaemon("copy", 24)
	if err != nil {
		return err
	}
	defer d.stop()
	if _, err := d.importImage(e.image); err != nil {
		return err
	}
	key := filepath.Join(d.dir, "id")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		return fmt.Errorf("ssh-keygen: %v\n%s", err, out)
	}
	name := "lvbench-cp"
	// B2s: 4 GiB of memory, so the file fits a tmpfs in the guest (the
	// test image's root file system is 512 MiB).
	e.logf("copy: creating %s", name)
	if _, err := d.cli("create", name, "--size", "Standard_B2s", "--image", "tiny", "--ssh-key", key+".pub"); err != nil {
		return withLog(err, d)
	}
	inst, err := d.c.Instance(context.Background(), name)
	if err != nil {
		return err
	}
	size := int64(e.o.copyMiB) << 20
	dir := "/home/" + inst.GuestUser + "/bench"
	if _, err := d.cli("exec", name, "--", "sh", "-c", fmt.Sprintf("mkdir -p %s && mount -t tmpfs -o size=%dm,mode=1777 tmpfs %s", dir, 2*e.o.copyMiB+64, dir)); err != nil {
		return err
	}
	src := filepath.Join(d.dir, "payload.bin")
	sum, err := randomFile(src, size)
	if err != nil {
		return err
	}
	config := filepath.Join(d.dir, "ssh_config")
	cfg, err := d.cliEnv([]string{"XDG_CONFIG_HOME=" + filepath.Join(d.dir, "config")}, "ssh-config", name)
	if err != nil {
		return err
	}
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		return err
	}
	sshArgs := []string{"-F", config, "-i", key, "-o", "BatchMode=yes"}
	// sshd may start a moment after the agent answered.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := exec.Command("ssh", append(sshArgs, name, "true")...).CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ssh %s never answered: %v\n%s", name, err, out)
		}
		time.Sleep(2 * time.Second)
	}
	// OpenSSH's scp speaks SFTP, which a guest without sftp-server (the
	// test image's dropbear) may leave hanging: give it a minute.
	probeCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	scp := exec.CommandContext(probeCtx, "scp", append(append([]string{"-q"}, sshArgs...), "/etc/hostname", name+":bench/probe")...).Run() == nil
	cancel()
	r.copyMiB, r.copyVia = e.o.copyMiB, "ssh NAME 'cat > F' / ssh NAME cat F"
	if scp {
		r.copyVia = "scp"
	}
	back := filepath.Join(d.dir, "back.bin")
	check := func(what string) error {
		got, err := fileSum(back)
		if err != nil {
			return err
		}
		if got != sum {
			return fmt.Errorf("%s: the copy out has sha256 %s, want %s", what, got, sum)
		}
		return os.Remove(back)
	}
	ssh := func(in bool) error {
		var cmd *exec.Cmd
		switch {
		case scp && in:
			cmd = exec.Command("scp", append(append([]string{"-q"}, sshArgs...), src, name+":bench/ssh.bin")...)
		case scp:
			cmd = exec.Command("scp", append(append([]string{"-q"}, sshArgs...), name+":bench/ssh.bin", back)...)
		case in:
			cmd = exec.Command("ssh", append(sshArgs, name, "cat > bench/ssh.bin")...)
			f, err := os.Open(src)
			if err != nil {
				return err
			}
			defer f.Close()
			cmd.Stdin = f
		default:
			cmd = exec.Command("ssh", append(sshArgs, name, "cat bench/ssh.bin")...)
			f, err := os.Create(back)
			if err != nil {
				return err
			}
			defer f.Close()
			cmd.Stdout = f
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
		}
		return nil
	}
	e.logf("copy: %d runs each of %d MiB in and out, labvm cp and %s", e.o.copyRuns, e.o.copyMiB, r.copyVia)
	for i := 0; i < e.o.copyRuns; i++ {
		rss := sampleRSS(d)
		took, err := d.timedCLI("cp", "-q", src, name+":bench/cp.bin")
		if err != nil {
			return withLog(err, d)
		}
		r.cpIn.add(took)
		if took, err = d.timedCLI("cp", "-q", name+":bench/cp.bin", back); err != nil {
			return withLog(err, d)
		}
		r.cpOut.add(took)
		r.copyRSS = max(r.copyRSS, rss())
		if err := check("labvm cp"); err != nil {
			return err
		}
		t0 := time.Now()
		if err := ssh(true); err != nil {
			return err
		}
		r.sshIn.add(time.Since(t0))
		t0 = time.Now()
		if err := ssh(false); err != nil {
			return err
		}
		r.sshOut.add(time.Since(t0))
		if err := check(r.copyVia); err != nil {
			return err
		}
	}
	return e.deleteInstance(d, name)
}

func withLog(err error, d *daemonProc) error {
	return fmt.Errorf("%w\nlabvmd log:\n%s", err, d.logTail())
}

// cliEnv is cli with extra environment.
func (d *daemonProc) cliEnv(env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.e.o.labvm, args...)
	cmd.Env = append(append(os.Environ(), "LABVM_SOCKET="+d.socket), env...)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("labvm %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// sampleRSS samples the daemon's RSS every 100 ms until the returned
// function is called, which returns the peak.
func sampleRSS(d *daemonProc) func() int64 {
	done := make(chan struct{})
	peak := make(chan int64)
	go func() {
		var p int64
		for {
			p = max(p, d.rss())
			select {
			case <-done:
				peak <- p
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() int64 { close(done); return <-peak }
}

func randomFile(p string, size int64) (string, error) {
	src, err := os.Open("/dev/urandom")
	if err != nil {
		return "", err
	}
	defer src.Close()
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), src, size); err != nil {
		f.Close()
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), f.Close()
}

func fileSum(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// mbps is a size moved in a duration, in MB/s.
func mbps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / 1e6 / d.Seconds()
}

// copyMarkdown is the report's section on copies.
func (r *report) copyMarkdown(w func(format string, args ...any)) {
	if len(r.cpIn.runs) == 0 {
		return
	}
	n := int64(r.copyMiB) << 20
	w("\n## Copying files: `labvm cp` against %s through the labvm tunnel\n\n", r.copyVia)
	w("A %d MiB file of random bytes copied into a tmpfs in a booted test-image guest (Standard_B2s, TCG)\n", r.copyMiB)
	w("and back, %d times each way, each copy checked by sha256. `labvm cp` streams over one TCP\n", len(r.cpIn.runs))
	w("connection from labvmd to a listener it starts in the guest (see docs/ARCHITECTURE.md, \"Copying\n")
	w("files\"); the comparison is ssh through `labvm ssh-config`'s ProxyCommand (`labvm tunnel`), the\n")
	w("path `labvm ssh` uses. Whole commands, wall time. labvmd's peak RSS during the copies: %d MB.\n\n", r.copyRSS>>20)
	w("ssh here is `%s`.\n\n", r.copyVia)
	w("| direction | labvm cp median | MB/s | ssh median | MB/s | labvm cp throughput ÷ ssh's |\n|---|---|---|---|---|---|\n")
	for _, d := range []struct {
		what     string
		cp, base *sample
	}{{"in (host → guest)", &r.cpIn, &r.sshIn}, {"out (guest → host)", &r.cpOut, &r.sshOut}} {
		cp, base := d.cp.median(), d.base.median()
		w("| %s | %s | %.1f | %s | %.1f | %.2f× |\n", d.what, ms(cp), mbps(n, cp), ms(base), mbps(n, base), float64(base)/float64(cp))
	}
}
