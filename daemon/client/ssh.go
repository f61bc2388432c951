package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os/exec"
	"strconv"
	"strings"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/vm/shell"
)

// SSHTarget is a labvmd on another host, reached the way docker contexts
// reach a remote daemon: the user's own OpenSSH client runs `labvm
// dial-stdio` on the far host, which joins its standard input and output
// to that host's socket. The far daemon sees the far Unix user through
// SO_PEERCRED; ssh's own config, agent, jump hosts and known_hosts apply,
// and labvm opens no port of its own.
type SSHTarget struct {
	User string // the far login, "" for ssh's own choice
	Host string
	Port int // 0 for ssh's own choice
	// Socket is the far daemon's socket, "" for the far labvm's default.
	Socket string
	// SSH is the ssh client to run, "ssh" (found on PATH) by default.
	SSH string
}

// ParseSSHURL reads ssh://[user@]host[:port]. Anything else in the URL
// (a password, a path, a query) is refused: the far socket is given
// apart, and secrets belong in ssh's agent.
func ParseSSHURL(raw string) (SSHTarget, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return SSHTarget{}, fmt.Errorf("host %q is not a URL: %v", raw, err)
	}
	switch {
	case u.Scheme != "ssh":
		return SSHTarget{}, fmt.Errorf("host %q: only ssh://[user@]host[:port] is supported", raw)
	case u.Opaque != "" || u.Hostname() == "":
		return SSHTarget{}, fmt.Errorf("host %q has no host name; write ssh://[user@]host[:port]", raw)
	case u.Path != "" && u.Path != "/":
		return SSHTarget{}, fmt.Errorf("host %q has a path; give the far socket with --socket instead", raw)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return SSHTarget{}, fmt.Errorf("host %q has a query or fragment; write ssh://[user@]host[:port]", raw)
	}
	t := SSHTarget{Host: u.Hostname()}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			return SSHTarget{}, fmt.Errorf("host %q holds a password; use ssh keys (ssh-agent) instead", redactURL(u))
		}
		t.User = u.User.Username()
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return SSHTarget{}, fmt.Errorf("host %q: port %q is not a number from 1 to 65535", raw, p)
		}
		t.Port = n
	}
	if err := t.validate(); err != nil {
		return SSHTarget{}, fmt.Errorf("host %q: %w", raw, err)
	}
	return t, nil
}

func redactURL(u *url.URL) string {
	c := *u
	if c.User != nil {
		c.User = url.User(c.User.Username())
	}
	return c.String()
}

// validate refuses what ssh would read as an option or what a shell on
// the far side would split.
func (t SSHTarget) validate() error {
	if strings.HasPrefix(t.Host, "-") || strings.HasPrefix(t.User, "-") {
		return errors.New("a user or host cannot start with '-'")
	}
	for _, s := range []string{t.Host, t.User, t.Socket} {
		if strings.ContainsAny(s, "\x00\r\n") {
			return errors.New("a user, host or socket cannot hold a line break or NUL")
		}
	}
	return nil
}

// URL is the target as ssh://[user@]host[:port].
func (t SSHTarget) URL() string {
	u := url.URL{Scheme: "ssh", Host: t.Host}
	if t.Port != 0 {
		u.Host = net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
	} else if strings.Contains(t.Host, ":") {
		u.Host = "[" + t.Host + "]"
	}
	if t.User != "" {
		u.User = url.User(t.User)
	}
	return u.String()
}

// String names the target in messages: the URL, and the far socket when
// one was given.
func (t SSHTarget) String() string {
	if t.Socket != "" {
		return t.URL() + " (socket " + t.Socket + ")"
	}
	return t.URL()
}

// RemoteCommand is what ssh runs on the far host: labvm dial-stdio,
// quoted for the far user's shell.
func (t SSHTarget) RemoteCommand() string { return t.remoteLabvm("dial-stdio") }

// remoteLabvm is the far labvm running sub, with the far socket.
func (t SSHTarget) remoteLabvm(sub string) string {
	argv := []string{"labvm"}
	if t.Socket != "" {
		argv = append(argv, "--socket", t.Socket)
	}
	return shell.Join(append(argv, sub)...)
}

// Args are ssh's arguments after argv[0]: no terminal, a connect
// timeout, the port and login when given, then the host after "--" and
// the remote command. Host key checking and everything else is ssh's
// own configuration.
func (t SSHTarget) Args() []string {
	args := []string{"-T", "-o", "ConnectTimeout=30"}
	if t.User != "" {
		args = append(args, "-l", t.User)
	}
	if t.Port != 0 {
		args = append(args, "-p", strconv.Itoa(t.Port))
	}
	return append(args, "--", t.Host, t.RemoteCommand())
}

// NewSSH returns a client of the labvmd that t reaches. Every connection
// (each HTTP connection the client keeps, each tunnel) is one ssh
// process, ended when the connection is closed; Close ends the idle ones.
func NewSSH(t SSHTarget) (*Client, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	if t.Host == "" {
		return nil, errors.New("ssh target without a host")
	}
	sshPath := t.SSH
	if sshPath == "" {
		sshPath = "ssh"
	}
	args := t.Args()
	name := t.String()
	c := newClient(name, func(ctx context.Context) (net.Conn, error) {
		return startCommandConn(ctx, name, sshPath, args)
	})
	c.remote = &t
	return c, nil
}

// RemoteError is an ssh process that carried a connection and failed:
// ssh could not log in, the far labvm is missing, or the far labvm could
// not reach its daemon. Stderr is the end of what ssh and the far labvm
// printed.
type RemoteError struct {
	Target string
	Err    error
	Stderr string
}

func (e *RemoteError) Error() string {
	msg := fmt.Sprintf("ssh to %s failed: %v", e.Target, e.Err)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

func (e *RemoteError) Unwrap() error { return e.Err }

// remoteError turns a failed ssh transport into advice, nil for other
// errors.
func (c *Client) remoteError(err error) error {
	if c.remote == nil {
		return nil
	}
	var re *RemoteError
	if errors.As(err, &re) {
		return &api.Error{Code: api.CodeUnavailable,
			Message: fmt.Sprintf("cannot reach labvmd on %s: %s", c.target, remoteMessage(re)),
			Hint:    c.remoteHint()}
	}
	var pe *fs.PathError
	if errors.Is(err, exec.ErrNotFound) || (errors.As(err, &pe) && pe.Op == "fork/exec") {
		return &api.Error{Code: api.CodeUnavailable,
			Message: fmt.Sprintf("cannot reach labvmd on %s: no ssh client: %v", c.target, err),
			Hint:    "install OpenSSH's client (`sudo apt-get install openssh-client`)"}
	}
	return nil
}

// remoteMessage is what went wrong, the far side's own words first.
func remoteMessage(re *RemoteError) string {
	s := strings.TrimSpace(re.Stderr)
	if s == "" {
		return fmt.Sprintf("ssh %v", re.Err)
	}
	return fmt.Sprintf("ssh %v: %s", re.Err, strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " | ")), " "))
}

func (c *Client) remoteHint() string {
	t := c.remote
	probe := []string{"ssh"}
	if t.User != "" {
		probe = append(probe, "-l", t.User)
	}
	if t.Port != 0 {
		probe = append(probe, "-p", strconv.Itoa(t.Port))
	}
	probe = append(probe, "--", t.Host, t.remoteLabvm("info"))
	return fmt.Sprintf("check that `%s` works: ssh must log in without a prompt (a key in ssh-agent, the host in known_hosts), and labvm must be installed on %s in the PATH of non-interactive shells, with labvmd running there",
		strings.Join(probe, " "), t.Host)
}
