package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/labvm/labvm/daemon/authz"
)

// Connection limits: one local user cannot hold more than perUIDConns
// connections at once (each an fd and a goroutine in a root daemon), so a
// flood by one leaves room for everyone else. root is not limited.
const (
	perUIDConns = 64
	totalConns  = 4096
)

// Listen opens the API socket. A socket file left by a dead daemon is
// removed, but only after dialling it proves nobody is listening: removing
// a live daemon's socket would orphan it silently.
func Listen(path, group string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		conn, dialErr := net.DialTimeout("unix", path, time.Second)
		if dialErr == nil {
			conn.Close()
			return nil, fmt.Errorf("another labvmd is already listening on %s", path)
		}
		if !errors.Is(dialErr, syscall.ECONNREFUSED) && !errors.Is(dialErr, syscall.ENOENT) {
			return nil, fmt.Errorf("check existing socket %s: %w", path, dialErr)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := restrictSocket(path, group); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// restrictSocket makes the socket 0660 for root and the labvm group: being
// in the group is what lets a user talk to the daemon at all.
func restrictSocket(path, group string) error {
	if group != "" && strings.TrimSpace(group) == group {
		if g, err := user.LookupGroup(group); err == nil {
			gid, _ := strconv.Atoi(g.Gid)
			if err := os.Chown(path, 0, gid); err != nil && os.Geteuid() == 0 {
				return fmt.Errorf("chown socket to group %s: %w", group, err)
			}
		}
	}
	if err := os.Chmod(path, 0o660); err != nil {
		return fmt.Errorf("chmod socket: %w", err)
	}
	return nil
}

// Serve runs the API server on ln until ctx ends, then shuts it down.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	lim := &limitListener{Listener: ln, log: s.Log, perUID: map[int]int{}}
	srv := &http.Server{
		Handler:     s.Handler(),
		BaseContext: func(net.Listener) context.Context { return ctx },
		ConnContext: func(ctx context.Context, conn net.Conn) context.Context {
			if lc, ok := conn.(*limitedConn); ok {
				return authz.WithCaller(ctx, lc.caller)
			}
			c, err := authz.PeerCredentials(conn)
			if err != nil {
				return authz.WithCaller(ctx, nil)
			}
			return authz.WithCaller(ctx, &c)
		},
		ReadHeaderTimeout: 10 * time.Second,
		// Keep-alive connections that do nothing are closed: each holds
		// an fd of the caller's share.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(s.Log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lim) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx)
	// After Shutdown, Serve returns http.ErrServerClosed: the end asked
	// for, not a failure.
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		s.Log.Warn("API server ended with an error after shutdown", "error", err)
	}
	return nil
}

// limitListener reads each connection's credentials once, at accept, and
// refuses a connection over its user's share with a plain 429 answer.
type limitListener struct {
	net.Listener
	log *slog.Logger

	mu     sync.Mutex
	perUID map[int]int
	total  int
	warned time.Time
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c, err := authz.PeerCredentials(conn)
		if err != nil {
			// No identity: served, and refused by the server.
			return conn, nil
		}
		if why := l.admit(c.UID); why != "" {
			l.refuse(conn, c, why)
			continue
		}
		return &limitedConn{Conn: conn, l: l, caller: &c}, nil
	}
}

func (l *limitListener) admit(uid int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= totalConns {
		return fmt.Sprintf("labvmd has %d connections open", l.total)
	}
	if uid != 0 && l.perUID[uid] >= perUIDConns {
		return fmt.Sprintf("you have %d connections open to labvmd, the most one user may", perUIDConns)
	}
	l.perUID[uid]++
	l.total++
	return ""
}

func (l *limitListener) release(uid int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perUID[uid]--; l.perUID[uid] <= 0 {
		delete(l.perUID, uid)
	}
}

// refuse answers 429 without reading the request (a client's first bytes
// may never come) and closes. It writes in the background with a short
// deadline: a client that does not read must not stall Accept.
func (l *limitListener) refuse(conn net.Conn, c authz.Caller, why string) {
	l.mu.Lock()
	warn := time.Since(l.warned) > 10*time.Second
	if warn {
		l.warned = time.Now()
	}
	l.mu.Unlock()
	if warn {
		l.log.Warn("connection refused: over the per-user limit", "caller", c.Name, "uid", c.UID, "why", why)
	}
	go func() {
		defer conn.Close()
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		body := fmt.Sprintf(`{"error":{"code":"TooManyRequests","message":%q,"hint":"close other labvm commands (events, forwards, tunnels) and try again"}}`+"\n", why)
		fmt.Fprintf(conn, "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	}()
}

type limitedConn struct {
	net.Conn
	l      *limitListener
	caller *authz.Caller
	once   sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.l.release(c.caller.UID) })
	return c.Conn.Close()
}

// CloseWrite keeps the half-close tunnels rely on.
func (c *limitedConn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Conn.Close()
}
