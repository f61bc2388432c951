package authz

import (
	"context"
	"fmt"
	"net"
	"os/user"
	"strconv"

	"golang.org/x/sys/unix"
)

// Caller is who is on the other end of the socket, as the kernel says:
// nothing the client sends can change it.
type Caller struct {
	UID  int
	GID  int
	PID  int
	Name string
	// Groups are the names of the Unix groups the user is in, as the
	// host's group database says (for group role assignments).
	Groups []string
}

// IsRoot reports whether the caller is uid 0.
func (c Caller) IsRoot() bool { return c.UID == 0 }

type callerKey struct{}

// PeerCredentials reads SO_PEERCRED of a Unix connection and resolves the
// uid to a user and its groups.
func PeerCredentials(conn net.Conn) (Caller, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return Caller{}, fmt.Errorf("connection is %T, not a Unix socket", conn)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Caller{}, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Caller{}, err
	}
	if credErr != nil {
		return Caller{}, fmt.Errorf("read peer credentials: %w", credErr)
	}
	return Lookup(int(cred.Uid), int(cred.Gid), int(cred.Pid)), nil
}

// Lookup resolves a uid to a Caller with its name and groups. A uid with
// no account keeps its number as its name, and so matches no assignment
// made to a name.
func Lookup(uid, gid, pid int) Caller {
	c := Caller{UID: uid, GID: gid, PID: pid}
	c.Name = strconv.Itoa(c.UID)
	if u, err := user.LookupId(c.Name); err == nil {
		c.Name = u.Username
		gids, _ := u.GroupIds()
		for _, gid := range gids {
			if g, err := user.LookupGroupId(gid); err == nil {
				c.Groups = append(c.Groups, g.Name)
			}
		}
	}
	return c
}

// WithCaller attaches a connection's caller to ctx; a nil caller means the
// credentials could not be read, and every request on it is refused.
func WithCaller(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// FromContext returns the caller WithCaller attached.
func FromContext(ctx context.Context) (Caller, bool) {
	c, _ := ctx.Value(callerKey{}).(*Caller)
	if c == nil {
		return Caller{}, false
	}
	return *c, true
}
