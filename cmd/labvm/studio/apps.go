package studio

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

// appGateway serves an instance's applications (jupyter, rstudio …) on
// http://APP.INSTANCE.localhost:PORT/: a reverse proxy whose every
// connection to the guest is a tunnel opened through labvmd as this
// user, so labvmd's owner-only rule decides who gets through, and audits
// it. WebSockets pass (httputil.ReverseProxy relays upgrades).
//
// Each application gets a host of its own rather than a path under the
// page: applications then run at "/" as they expect (Jupyter and RStudio
// write absolute links), and being another origin, an application's
// scripts cannot read the page or its token.
type appGateway struct {
	s *Server
	// dial opens a tunnel to a port of an instance: client.Tunnel, as
	// the user; tests give their own.
	dial func(ctx context.Context, instance string, port int) (net.Conn, error)
	once sync.Once
	tr   *http.Transport
}

func (g *appGateway) serve(w http.ResponseWriter, r *http.Request, instance, appName string) {
	inst, err := g.s.c.Instance(r.Context(), instance)
	if err != nil {
		g.s.errorPage(w, r, err)
		return
	}
	var app *api.App
	for i := range inst.Apps {
		if inst.Apps[i].Name == appName {
			app = &inst.Apps[i]
		}
	}
	if app == nil {
		names := make([]string, 0, len(inst.Apps))
		for _, a := range inst.Apps {
			names = append(names, a.Name)
		}
		g.s.errorPage(w, r, &api.Error{Code: api.CodeNotFound,
			Message: fmt.Sprintf("%s's image %s has no application %q", instance, inst.Image, appName),
			Hint:    "its applications: " + strings.Join(names, ", ")})
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The URL's host names the tunnel (see transport); the
			// application sees the name the browser used, as Jupyter
			// compares a WebSocket's Origin with it.
			pr.SetURL(&url.URL{Scheme: "http", Host: net.JoinHostPort(instance, strconv.Itoa(app.Port))})
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: g.transport(),
		// Applications stream (notebook output, terminals): pass every
		// write on at once.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			g.s.errorPage(w, r, err)
		},
	}
	rp.ServeHTTP(w, r)
}

// transport dials every connection as a tunnel through labvmd to the
// instance and port its address names ("alice-dev:8888"). It keeps idle
// tunnels for reuse: they were opened as this user, for this user.
func (g *appGateway) transport() *http.Transport {
	g.once.Do(func() {
		g.tr = &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				host, port, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, fmt.Errorf("studio: gateway address %q: %w", addr, err)
				}
				p, err := strconv.Atoi(port)
				if err != nil {
					return nil, fmt.Errorf("studio: gateway port %q: %w", port, err)
				}
				return g.dial(ctx, host, p)
			},
			MaxIdleConnsPerHost: 8,
			IdleConnTimeout:     90 * time.Second,
		}
	})
	return g.tr
}
