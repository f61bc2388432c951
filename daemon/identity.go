package daemon

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

// peerCredentials reads SO_PEERCRED of a Unix connection.
func peerCredentials(conn net.Conn) (Caller, error) {
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
	c := Caller{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid)}
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
	return c, nil
}

// withCaller is http.Server.ConnContext: it reads the peer once per
// connection and attaches it to every request on it.
func withCaller(ctx context.Context, conn net.Conn) context.Context {
	c, err := peerCredentials(conn)
	if err != nil {
		// No identity, no access: requests on this connection are refused.
		return context.WithValue(ctx, callerKey{}, (*Caller)(nil))
	}
	return context.WithValue(ctx, callerKey{}, &c)
}

func callerFrom(ctx context.Context) (Caller, bool) {
	c, _ := ctx.Value(callerKey{}).(*Caller)
	if c == nil {
		return Caller{}, false
	}
	return *c, true
}
