package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labvm/labvm/test/hostreq"
)

// farHost is a real OpenSSH server on loopback in front of a labvmd: the
// "other host" of `labvm --host ssh://…`. Its host key, the users' keys
// and the near side's ssh configuration are the test's own; near-side
// commands run ssh through a wrapper that adds `-F` that configuration,
// which checks host keys strictly against the known_hosts the test wrote.
type farHost struct {
	dir    string
	port   int
	sshCfg string // the near side's ssh_config
	// path is PATH for near-side labvm commands: the ssh wrapper first.
	path string
}

// remoteUser is a Unix account that can log in through the test's sshd
// (a real shell, an unlocked password field), removed after the test.
func remoteUser(t *testing.T, name, group string) unixUser {
	t.Helper()
	args := []string{"--no-create-home", "--home-dir", "/nonexistent", "--no-user-group", "--gid", group, "--shell", "/bin/sh", "--password", "*", name}
	if out, err := exec.Command("useradd", args...).CombinedOutput(); err != nil {
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

// startSSHD runs sshd on a free loopback port letting users log in with
// one key; their sessions find the test's labvm first on PATH.
func startSSHD(t *testing.T, users ...unixUser) *farHost {
	t.Helper()
	sshd := hostreq.RequireTool(t, "sshd", "openssh-server")
	hostreq.RequireTool(t, "ssh", "openssh-client")
	dir, err := os.MkdirTemp("", "labvm-e2e-ssh-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	_ = os.Chmod(dir, 0o755)
	keygen := func(path string) string {
		t.Helper()
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "labvm-e2e", "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
		pub, err := os.ReadFile(path + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(pub))
	}
	hostPub := keygen(filepath.Join(dir, "host_key"))
	userPub := keygen(filepath.Join(dir, "id"))

	// authorized_keys/<user>: the key, and a PATH with the built labvm.
	akDir := filepath.Join(dir, "authorized_keys")
	if err := os.Mkdir(akDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range users {
		line := fmt.Sprintf("environment=\"PATH=%s:/usr/bin:/bin\" %s\n", bins.dir, userPub)
		if err := os.WriteFile(filepath.Join(akDir, u.name), []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, u.name)
	}
	// sshd's privilege separation directory, absent where no sshd ran yet.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := filepath.Join(dir, "sshd_config")
	conf := strings.Join([]string{
		"ListenAddress 127.0.0.1:" + strconv.Itoa(port),
		"HostKey " + filepath.Join(dir, "host_key"),
		"AuthorizedKeysFile " + akDir + "/%u",
		"AllowUsers " + strings.Join(names, " "),
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin no",
		"PermitUserEnvironment PATH",
		"UsePAM no",
		"PidFile none",
		"StrictModes no",
		"LogLevel VERBOSE",
	}, "\n") + "\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs lockedBuilder
	cmd := exec.Command(sshd, "-D", "-e", "-f", cfg)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("sshd log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd not listening after 10s:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The near side: known_hosts with the server's key, strict checking.
	knownHosts := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(fmt.Sprintf("[127.0.0.1]:%d %s\n", port, hostPub)), 0o600); err != nil {
		t.Fatal(err)
	}
	sshCfg := filepath.Join(dir, "ssh_config")
	client := strings.Join([]string{
		// "stranger" is the same server under a name with no known key.
		"Host stranger",
		"    HostName 127.0.0.1",
		"    UserKnownHostsFile /dev/null",
		"Host *",
		"    IdentityFile " + filepath.Join(dir, "id"),
		"    IdentitiesOnly yes",
		"    UserKnownHostsFile " + knownHosts,
		"    GlobalKnownHostsFile /dev/null",
		"    StrictHostKeyChecking yes",
		"    BatchMode yes",
	}, "\n") + "\n"
	if err := os.WriteFile(sshCfg, []byte(client), 0o600); err != nil {
		t.Fatal(err)
	}
	wrapDir := filepath.Join(dir, "bin")
	if err := os.Mkdir(wrapDir, 0o755); err != nil {
		t.Fatal(err)
	}
	wrapper := fmt.Sprintf("#!/bin/sh\nexec /usr/bin/ssh -F '%s' \"$@\"\n", sshCfg)
	if err := os.WriteFile(filepath.Join(wrapDir, "ssh"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	return &farHost{dir: dir, port: port, sshCfg: sshCfg, path: wrapDir + ":/usr/bin:/bin"}
}

// url is ssh://USER@127.0.0.1:PORT.
func (h *farHost) url(u unixUser) string {
	return fmt.Sprintf("ssh://%s@127.0.0.1:%d", u.name, h.port)
}

// near runs labvm on the near side (as root, with its own config dir and
// no LABVM_SOCKET, so only --host, --context or a current context can
// choose the daemon).
func (h *farHost) near(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.labvm, args...)
	cmd.Env = h.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run labvm %v: %v", args, err)
	}
	return r
}

func (h *farHost) env() []string {
	return []string{"PATH=" + h.path, "HOME=" + h.dir, "XDG_CONFIG_HOME=" + filepath.Join(h.dir, "config")}
}

func (h *farHost) must(t *testing.T, args ...string) string {
	t.Helper()
	r := h.near(t, args...)
	if r.code != 0 {
		t.Fatalf("labvm %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func (h *farHost) mustFail(t *testing.T, wantInStderr string, args ...string) result {
	t.Helper()
	r := h.near(t, args...)
	if r.code == 0 || !strings.Contains(r.stderr, wantInStderr) {
		t.Fatalf("labvm %s: want a failure mentioning %q, got exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), wantInStderr, r.code, r.stdout, r.stderr)
	}
	return r
}

// sshLeft lists the ssh processes still running with the test's config
// 10 s after the commands that started them ended: every command must
// end the ones it started (a connection's ssh gets 2 s to leave on its
// own before it is signalled, and a ProxyCommand's outlives ssh a moment).
func (h *farHost) sshLeft() string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("pgrep", "-a", "-f", "ssh -F '?"+h.sshCfg).Output()
		if left := strings.TrimSpace(string(out)); left == "" || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitForPortRemote waits until the guest's sshd answers through the far
// daemon (Running means the agent answered; sshd may come a moment later).
func waitForPortRemote(t *testing.T, h *farHost, far []string, name string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cmd := exec.Command(bins.labvm, append(far, "tunnel", name, "22")...)
		cmd.Env = h.env()
		cmd.Stdin = strings.NewReader("")
		out, _ := cmd.Output()
		if bytes.HasPrefix(out, []byte("SSH-")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("port 22 of %s not answering through the far daemon", name)
		}
		time.Sleep(time.Second)
	}
}
