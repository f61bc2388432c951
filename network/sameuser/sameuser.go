// Package sameuser owns one rule of labvm's local listeners (`labvm
// forward`, `labvm open`, the `labvm studio` web page): a loopback TCP
// listener started by a user serves only that user. Every other local
// account can connect to 127.0.0.1 too, and would otherwise reach the
// user's instance past labvmd's owner-only check, so each accepted
// connection is kept only when the kernel says the socket at its other
// end belongs to this process's UID. The kernel is asked through
// sock_diag (inet_diag over netlink, pure Go), IPv4 and IPv6.
//
// A connection arriving through `ssh -L` passes: its far end is the
// user's own sshd session process. Root is not special: a listener run by
// alice refuses root's connections too (root can reach the instance
// through labvmd itself).
package sameuser

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Refusal describes a connection that was closed because its peer socket
// is not the listener's user's (or could not be looked up).
type Refusal struct {
	// Remote is the peer's address.
	Remote net.Addr
	// UID is the peer socket's owner; Known is false when the lookup
	// failed (then Err says why).
	UID   uint32
	Known bool
	// User is UID's name, or "" when it has none.
	User string
	// Want is the UID the listener serves.
	Want uint32
	Err  error
}

func (r *Refusal) Error() string {
	if !r.Known {
		return fmt.Sprintf("refused a connection from %s: cannot tell which user made it (%v); only uid %d may connect", r.Remote, r.Err, r.Want)
	}
	who := "uid " + strconv.FormatUint(uint64(r.UID), 10)
	if r.User != "" {
		who = "user " + r.User + " (" + who + ")"
	}
	return fmt.Sprintf("refused a connection from %s: it belongs to %s, and this listener serves only uid %d", r.Remote, who, r.Want)
}

// Options tune a Listener.
type Options struct {
	// Refused is called, from Accept, for each refused connection after it
	// is closed; the CLI prints it on stderr. Nil ignores refusals.
	Refused func(*Refusal)
}

// Listener accepts loopback TCP connections whose peer socket belongs to
// the same UID as this process; it closes the others and goes on
// accepting. It is a net.Listener, so http.Serve can use it.
type Listener struct {
	net.Listener
	opts Options
	// uid is the only peer owner accepted: the process's effective UID,
	// the owner the kernel gives the sockets it creates.
	uid uint32
	// lookup finds the peer socket of a connection; a field so tests can
	// see failures handled.
	lookup func(peer, local *net.TCPAddr) (*netlink.Socket, error)
}

var _ net.Listener = (*Listener)(nil)

// Listen listens on a loopback TCP address ("127.0.0.1:8888",
// "[::1]:0"); network is "tcp", "tcp4" or "tcp6". Any other address is
// refused: only connections made on this host have a peer socket the
// kernel can name. Errors from the kernel's listen are wrapped, so
// errors.Is(err, syscall.EADDRINUSE) works.
func Listen(ctx context.Context, network, address string, opts Options) (*Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("sameuser: network %q: want tcp, tcp4 or tcp6", network)
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("sameuser: address %q: %w", address, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("sameuser: %q is not a loopback IP address (127.0.0.1 or ::1): the peer's user is only known for connections made on this host", host)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return newListener(ln, opts), nil
}

func newListener(ln net.Listener, opts Options) *Listener {
	return &Listener{Listener: ln, opts: opts, uid: uint32(os.Geteuid()), lookup: peerSocket}
}

// Accept returns the next connection made by this process's user.
// Others are closed and reported through Options.Refused; Accept only
// returns an error when the underlying listener does (closed, out of
// descriptors …).
func (l *Listener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		r := l.check(conn)
		if r == nil {
			return conn, nil
		}
		conn.Close()
		if l.opts.Refused != nil {
			l.opts.Refused(r)
		}
	}
}

// check returns nil when conn's peer socket is owned by l.uid and still
// open in some process.
func (l *Listener) check(conn net.Conn) *Refusal {
	r := &Refusal{Remote: conn.RemoteAddr(), Want: l.uid}
	peer, ok1 := conn.RemoteAddr().(*net.TCPAddr)
	local, ok2 := conn.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		r.Err = fmt.Errorf("not a TCP connection (%T)", conn.RemoteAddr())
		return r
	}
	s, err := l.lookup(peer, local)
	if err != nil {
		r.Err = err
		return r
	}
	// A socket without an inode is no longer held by any process (the
	// peer closed, e.g. TIME_WAIT): the kernel reports uid 0 for those,
	// which must not pass for root's own.
	if s.INode == 0 {
		r.Err = errors.New("the peer socket is already closed")
		return r
	}
	r.UID, r.Known = s.UID, true
	if s.UID == l.uid {
		return nil
	}
	if u, err := user.LookupId(strconv.FormatUint(uint64(s.UID), 10)); err == nil {
		r.User = u.Username
	}
	return r
}

// peerSocket asks the kernel for the socket at the other end of a
// loopback connection: the one whose source is peer and destination local.
func peerSocket(peer, local *net.TCPAddr) (*netlink.Socket, error) {
	s, err := socketGet(peer, local)
	if err == nil && sameTuple(s, peer, local) {
		return s, nil
	}
	// netlink's lookup is a dump filtered by ports only, and finds only
	// sockets of the address's family: search whole tables when it found
	// nothing or a namesake on other addresses. An IPv6 socket that
	// reached 127.0.0.1 as ::ffff:127.0.0.1 (Java's default) is only in
	// the IPv6 table.
	families := []uint8{unix.AF_INET6}
	if peer.IP.To4() != nil {
		families = []uint8{unix.AF_INET, unix.AF_INET6}
	}
	for _, fam := range families {
		socks, derr := netlink.SocketDiagTCP(fam)
		if derr != nil && !errors.Is(derr, netlink.ErrDumpInterrupted) {
			continue
		}
		for _, s := range socks {
			if sameTuple(s, peer, local) {
				return s, nil
			}
		}
	}
	if err == nil {
		err = errors.New("no socket with that address")
	}
	return nil, fmt.Errorf("look up the peer socket of %s: %w", peer, err)
}

// socketGet is netlink.SocketGet, retried while the kernel says the dump
// was interrupted by a concurrent change.
func socketGet(peer, local *net.TCPAddr) (*netlink.Socket, error) {
	var err error
	for range 3 {
		var s *netlink.Socket
		s, err = netlink.SocketGet(peer, local)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return s, err
		}
	}
	return nil, err
}

// sameTuple reports whether s is the socket from peer to local. net.IP's
// Equal takes ::ffff:a.b.c.d and a.b.c.d as the same address.
func sameTuple(s *netlink.Socket, peer, local *net.TCPAddr) bool {
	return s != nil &&
		int(s.ID.SourcePort) == peer.Port && s.ID.Source.Equal(peer.IP) &&
		int(s.ID.DestinationPort) == local.Port && s.ID.Destination.Equal(local.IP)
}
