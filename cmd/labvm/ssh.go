package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/vm/shell"
	"github.com/spf13/cobra"
)

// lookSSH finds the system ssh client.
func lookSSH() (string, error) {
	path, err := exec.LookPath("ssh")
	if err != nil {
		return "", &api.Error{Code: api.CodeUnavailable, Message: "no ssh client found in PATH",
			Hint: "install OpenSSH's client (`sudo apt install openssh-client`), or use `labvm tunnel` with another client"}
	}
	return path, nil
}

func newSSHCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "ssh NAME [-- SSH-ARGS…]",
		Short: "Log in to the instance with ssh, through labvmd",
		Long: `Run the system's ssh to the instance as its guest user, with labvm tunnel
as the ProxyCommand: the guest's network is reachable only through labvmd.
SSH works only on instances created with --ssh-key; it logs in with that key.
Anything after -- is passed to ssh: options, then a command to run.

Host keys: labvmd makes each instance's SSH host key and gives it to the
guest at creation, so the key is known before the first login. labvm
writes it to its own known_hosts file ($XDG_CONFIG_HOME/labvm/known_hosts,
by default ~/.config/labvm/known_hosts) under the alias labvm-NAME-ID8 (ID8
is the first 8 characters of the instance's id, see ` + "`labvm show`" + `), and ssh
checks strictly against it (StrictHostKeyChecking=yes): a guest presenting
any other key is refused, and labvm says so. An instance created again
under the same name has a new id, hence a new alias and a new key.
Instances created before labvmd made host keys have none recorded: for
them ssh accepts the first key it sees (accept-new, in your own
known_hosts), with a warning; recreate them to have their key pinned.

labvm's options come first and ssh keeps the first value it sees, so
SSH-ARGS cannot change the user, the proxy or the host key checks.`,
		Example: `  labvm ssh alice-dev
  labvm ssh alice-dev -- -i ~/.ssh/id_ed25519 hostname
  labvm ssh alice-dev -- -L 8080:localhost:80`,
		GroupID: "access",
		Args: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			if len(args) < 1 || (dash == -1 && len(args) != 1) || (dash != -1 && dash != 1) {
				return usageErrorf("usage: %s", cmd.UseLine())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			sshPath, err := lookSSH()
			if err != nil {
				return err
			}
			inst, err := a.sshTarget(cmd.Context(), args[0], true)
			if err != nil {
				return err
			}
			acc, err := a.sshAccess(inst)
			if err != nil {
				return err
			}
			return a.runSSH(sshPath, sshArgs(acc, inst, args[1:]), inst, acc)
		},
	}
}

func newSSHConfigCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "ssh-config NAME",
		Short: "Print an ssh_config block for the instance",
		Long: `Print a Host block that makes plain ssh, scp, rsync and editors' remote
modes reach the instance through labvmd. Host keys are handled as for
` + "`labvm ssh`" + ` (see its help): the instance's key is written to labvm's
known_hosts now, and the block checks strictly against that file.`,
		Example: `  labvm ssh-config alice-dev >> ~/.ssh/config && ssh alice-dev`,
		GroupID: "access",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			inst, err := a.sshTarget(cmd.Context(), args[0], false)
			if err != nil {
				return err
			}
			acc, err := a.sshAccess(inst)
			if err != nil {
				return err
			}
			_, err = io.WriteString(a.stdout, sshConfig(acc, inst))
			return err
		},
	}
}

// sshTarget is the instance to log in to. With probe it opens and closes
// one tunnel to port 22 first, so any refusal (SSH off, not Running, not
// yours) is labvmd's explanation rather than ssh's "Connection closed".
func (a *app) sshTarget(ctx context.Context, name string, probe bool) (api.Instance, error) {
	if probe {
		conn, err := a.client().Tunnel(ctx, name, 22)
		if err != nil {
			return api.Instance{}, err
		}
		conn.Close()
	}
	inst, err := a.client().Instance(ctx, name)
	if err != nil {
		return inst, err
	}
	if !inst.SSH {
		return inst, &api.Error{Code: api.CodeConflict,
			Message: fmt.Sprintf("SSH is off on %s: it was created without --ssh-key, and SSH can only be enabled when an instance is created", name),
			Hint:    "create a new instance with a key: labvm create NAME … --ssh-key ~/.ssh/id_ed25519.pub"}
	}
	return inst, nil
}

// sshAccess is what ssh needs beside the instance: labvm itself as the
// ProxyCommand, labvmd's socket, and labvm's known_hosts file holding the
// instance's pinned host keys ("" when labvmd recorded none).
type sshAccess struct {
	self, knownHosts string
	// target are labvm's global flags naming the daemon (--socket, or
	// --host for another host's).
	target []string
}

// sshAccess pins inst's host keys in labvm's known_hosts, or warns that
// there are none to pin.
func (a *app) sshAccess(inst api.Instance) (sshAccess, error) {
	self, err := os.Executable()
	if err != nil {
		return sshAccess{}, fmt.Errorf("find the labvm binary for ssh's ProxyCommand: %w", err)
	}
	acc := sshAccess{self: self, target: a.targetArgs()}
	if len(inst.SSHHostKeys) == 0 {
		fmt.Fprintf(a.stderr, "Warning: labvmd recorded no SSH host key for %s (it was created before labvmd made host keys), so ssh will trust the key the guest presents the first time. Recreate the instance to have its host key pinned.\n", inst.Name)
		return acc, nil
	}
	if acc.knownHosts, err = knownHostsPath(); err != nil {
		return sshAccess{}, err
	}
	if _, err := sshPathOption(acc.knownHosts); err != nil {
		return sshAccess{}, err
	}
	if err := writeKnownHosts(acc.knownHosts, hostKeyAlias(inst), inst.SSHHostKeys); err != nil {
		return sshAccess{}, fmt.Errorf("record %s's SSH host key: %w", inst.Name, err)
	}
	return acc, nil
}

// hostKeyAlias names the instance's host key in known_hosts; the id part
// makes a re-created instance a different host.
func hostKeyAlias(inst api.Instance) string {
	id := inst.ID
	if len(id) > 8 {
		id = id[:8]
	}
	return "labvm-" + inst.Name + "-" + id
}

// proxyCommand is the ProxyCommand line: ssh runs it through the shell
// after expanding %-tokens, so both are escaped.
func proxyCommand(self string, target []string, name string) string {
	argv := append(append([]string{self}, target...), "tunnel", name, "22")
	cmd := shell.Join(argv...)
	return strings.ReplaceAll(cmd, "%", "%%")
}

// sshPathOption is path as the value of a file option in ssh_config or
// -o: %-tokens escaped, and double-quoted when it holds what ssh would
// split on. ssh also expands ${VAR} in file names, with no escape, so
// such a path is refused.
func sshPathOption(path string) (string, error) {
	if strings.Contains(path, "${") || strings.ContainsAny(path, "\r\n") {
		return "", fmt.Errorf("labvm's known_hosts path %q cannot be passed to ssh (it contains \"${\" or a line break); set XDG_CONFIG_HOME to a plainer directory", path)
	}
	v := strings.ReplaceAll(path, "%", "%%")
	if strings.ContainsAny(v, " \t\"'\\#=") {
		v = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
	}
	return v, nil
}

// hostKeyOptions are ssh's host key settings for acc: strict checking
// against labvm's known_hosts when keys are pinned, else accept-new.
func hostKeyOptions(acc sshAccess) [][2]string {
	if acc.knownHosts == "" {
		return [][2]string{{"StrictHostKeyChecking", "accept-new"}}
	}
	file, _ := sshPathOption(acc.knownHosts) // checked in sshAccess
	return [][2]string{{"StrictHostKeyChecking", "yes"}, {"UserKnownHostsFile", file}}
}

// sshArgs are ssh's arguments after argv[0]. ssh takes options again
// after the destination, so the user's extra options may follow it.
func sshArgs(acc sshAccess, inst api.Instance, extra []string) []string {
	args := []string{
		"-o", "ProxyCommand=" + proxyCommand(acc.self, acc.target, inst.Name),
		"-o", "HostKeyAlias=" + hostKeyAlias(inst),
	}
	for _, o := range hostKeyOptions(acc) {
		args = append(args, "-o", o[0]+"="+o[1])
	}
	args = append(args, "-l", inst.GuestUser, inst.Name)
	return append(args, extra...)
}

func sshConfig(acc sshAccess, inst api.Instance) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# labvm instance %s (id %s), written by `labvm ssh-config`\n", inst.Name, inst.ID)
	fmt.Fprintf(&b, "Host %s\n", inst.Name)
	fmt.Fprintf(&b, "    HostName %s\n", inst.Name)
	fmt.Fprintf(&b, "    User %s\n", inst.GuestUser)
	fmt.Fprintf(&b, "    HostKeyAlias %s\n", hostKeyAlias(inst))
	fmt.Fprintf(&b, "    ProxyCommand %s\n", proxyCommand(acc.self, acc.target, inst.Name))
	for _, o := range hostKeyOptions(acc) {
		fmt.Fprintf(&b, "    %s %s\n", o[0], o[1])
	}
	return b.String()
}

// runSSH runs ssh as a child on labvm's terminal, passing its standard
// error through while watching it for a failed host key check, which it
// then explains. ssh's exit status becomes labvm's.
func (a *app) runSSH(sshPath string, args []string, inst api.Instance, acc sshAccess) error {
	cmd := exec.Command(sshPath, args...)
	cmd.Stdin, cmd.Stdout = a.stdin, a.stdout
	watch := &hostKeyWatch{w: a.stderr}
	cmd.Stderr = watch
	// The ProxyCommand may hold the stderr pipe a moment after ssh exits.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", sshPath, err)
	}
	// Ctrl-C reaches ssh from the terminal and labvm's own handler keeps
	// labvm waiting for it; signals sent to labvm alone are passed on.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	var ee *exec.ExitError
	// 255 is ssh's own failure, so the marker is not a remote command's
	// output that happened to say the same.
	if watch.failed() && errors.As(err, &ee) && ee.ExitCode() == 255 {
		return hostKeyMismatch(inst, acc)
	}
	if errors.As(err, &ee) {
		if ee.ExitCode() < 0 { // killed by a signal
			return &exitError{code: 128 + int(ee.Sys().(syscall.WaitStatus).Signal())}
		}
		return &exitError{code: ee.ExitCode()}
	}
	if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		return fmt.Errorf("run %s: %w", sshPath, err)
	}
	return nil
}

// hostKeyMismatch explains ssh's "Host key verification failed.".
func hostKeyMismatch(inst api.Instance, acc sshAccess) error {
	alias := hostKeyAlias(inst)
	if acc.knownHosts == "" {
		return &api.Error{Code: api.CodeConflict,
			Message: fmt.Sprintf("ssh refused %s: the guest presented an SSH host key other than the one ssh recorded for %s at your first login. labvmd has no host key on record for this instance, so labvm cannot tell whether the guest changed its key or something is impersonating it", inst.Name, alias),
			Hint:    fmt.Sprintf("recreate the instance to have its host key pinned by labvmd; only if you know why the key changed, forget the old one with `ssh-keygen -R %s`", alias)}
	}
	return &api.Error{Code: api.CodeConflict,
		Message: fmt.Sprintf("ssh refused %s: the guest presented an SSH host key other than the one labvmd gave it at creation (%s). Something in the guest may be impersonating it: its SSH server or host key was replaced", inst.Name, strings.Join(inst.SSHHostKeys, ", ")),
		Hint: fmt.Sprintf("do not turn the key check off. Look into the guest with `labvm console %s` (which SSH server runs, its /etc/ssh/ssh_host_* keys); put back the key labvmd made or recreate the instance. labvm's known_hosts is %s (alias %s)",
			inst.Name, acc.knownHosts, alias)}
}

// hostKeyMarker is what ssh prints when it refuses the server's host key
// (a changed key, or one of a type not on record, under strict checking).
const hostKeyMarker = "Host key verification failed."

// hostKeyWatch passes ssh's standard error through unchanged and notes
// whether hostKeyMarker went by, also across writes.
type hostKeyWatch struct {
	w    io.Writer
	mu   sync.Mutex
	tail []byte
	seen bool
}

func (h *hostKeyWatch) Write(p []byte) (int, error) {
	h.mu.Lock()
	if !h.seen {
		buf := append(h.tail, p...)
		h.seen = bytes.Contains(buf, []byte(hostKeyMarker))
		if keep := len(hostKeyMarker) - 1; len(buf) > keep {
			buf = buf[len(buf)-keep:]
		}
		h.tail = bytes.Clone(buf)
	}
	h.mu.Unlock()
	return h.w.Write(p)
}

func (h *hostKeyWatch) failed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen
}
