// Package studio is `labvm studio`: the web page through which a user
// lists, creates, watches, starts, stops and opens their instances. It
// runs inside the user's own labvm process and is a thin renderer and
// proxy: every call it makes goes to labvmd on the Unix socket as that
// user (SO_PEERCRED), so roles, the owner-only application rule and the
// audit log apply exactly as for the command line. It owns no state of
// its own beyond a per-process token and the last operation it saw of
// each instance.
//
// It owns: the page's HTTP handlers and templates (html/template, assets
// embedded), the guard that keeps other origins and other host names out
// (guard.go), the relay of labvmd's event stream to the page as
// Server-Sent Events (events.go) and the applications' gateway, a reverse
// proxy through labvmd's tunnels on APP.NAME.localhost (apps.go). It
// must not know anything of the daemon beyond daemon/api and
// daemon/client; who may do what is the daemon's to decide.
package studio

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
)

// Config is what the command gives the page server.
type Config struct {
	// Client reaches labvmd as the user running the studio.
	Client *client.Client
	// SSHConfig returns the ssh_config block `labvm ssh-config` prints
	// for an instance (it pins the host key in labvm's known_hosts, as
	// that command does). Nil leaves the block out.
	SSHConfig func(api.Instance) (string, error)
	// SSHKeys are the public keys offered in the create form (the
	// user's ~/.ssh/*.pub), by file name.
	SSHKeys func() []SSHKey
	// Logf reports what the page cannot show (a lost event stream, a
	// failed write); nil discards.
	Logf func(format string, args ...any)
}

// SSHKey is a public key the create form offers.
type SSHKey struct {
	File string
	Key  string
}

// Server serves the page. It is an http.Handler.
type Server struct {
	cfg   Config
	c     *client.Client
	token string
	hub   *hub
	mux   *http.ServeMux
	apps  *appGateway
}

// New returns a page server; Run must be running for the live updates
// (events), the page itself works without.
func New(cfg Config) (*Server, error) {
	if cfg.Client == nil {
		return nil, errors.New("studio: no labvmd client")
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("studio: make the page token: %w", err)
	}
	s := &Server{cfg: cfg, c: cfg.Client, token: hex.EncodeToString(b)}
	s.hub = newHub(s)
	s.apps = &appGateway{s: s, dial: s.c.Tunnel}
	s.routes()
	return s, nil
}

// Token is the per-process token the page sends with every change; a
// page from another origin cannot read it.
func (s *Server) Token() string { return s.token }

// Run follows labvmd's event stream until ctx ends, reconnecting after
// a loss, and relays it to the open pages.
func (s *Server) Run(ctx context.Context) { s.hub.run(ctx) }

// Serve serves the page on ln until ctx ends. ln should be a
// sameuser.Listener: the page acts as whoever runs this process.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go s.Run(ctx)
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx) // open event streams end with ctx
		_ = srv.Close()
	})
	defer stop()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) || ctx.Err() != nil {
		return nil
	}
	return err
}

// ServeHTTP sends each request to the page or to an application's
// gateway by its Host, and refuses hosts that are neither: a page of
// another site whose name was made to resolve to 127.0.0.1 (DNS
// rebinding) arrives with its own name.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch h := classifyHost(r.Host); h.kind {
	case hostStudio:
		s.mux.ServeHTTP(w, r)
	case hostApp:
		s.apps.serve(w, r, h.instance, h.app)
	default:
		http.Error(w, fmt.Sprintf("labvm studio answers only to 127.0.0.1, localhost and APP.INSTANCE.localhost, not to %q", r.Host), http.StatusMisdirectedRequest)
	}
}
