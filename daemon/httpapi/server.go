// Package httpapi is labvmd's API: the route table, in which every route
// names the permission it needs and how it is audited; the server that
// checks that permission before a handler reads the body or touches the
// audit log; thin handlers that decode, call one engine method and encode;
// the wire conversions; the upgrades for tunnels and the console; and the
// wait and event streams.
//
// It knows HTTP and the wire types. What an operation does, and how, is
// the engines' (lifecycle, jobs, vnets, library, doctor); who may do it is
// authz's.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/audit"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/datasets"
	"github.com/labvm/labvm/daemon/doctor"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/jobs"
	"github.com/labvm/labvm/daemon/library"
	"github.com/labvm/labvm/daemon/lifecycle"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/policy"
	"github.com/labvm/labvm/daemon/vnets"
	"github.com/labvm/labvm/vm"
)

// maxBodyBytes bounds request bodies: the largest legitimate one is a
// create with an SSH key and scripts, far below this.
const maxBodyBytes = 1 << 20

// bodyProgress is how long a request body may go without sending a byte:
// a client that trickles its body holds a connection and a goroutine.
const bodyProgress = 30 * time.Second

// Info is what GET /v1/info tells besides the caller.
type Info struct {
	Version     string
	Host        string
	Accelerator string
	AccelReason string
	DataDir     string
	LibvirtURI  string
	DefaultVNet string
}

// Server holds the engines the handlers call.
type Server struct {
	Log       *slog.Logger
	Info      Info
	Authz     *authz.Authorizer
	Audit     *audit.Log
	Ops       *ops.Engine
	Lifecycle *lifecycle.Engine
	Jobs      *jobs.Engine
	VNets     *vnets.Engine
	Datasets  *datasets.Engine
	Library   *library.Library
	Doctor    *doctor.Doctor
	// Cluster reads the lab cluster; nil when this host is in none.
	Cluster ClusterView
	// Metrics serves GET /metrics (the Prometheus text format).
	Metrics http.Handler
	// Policy is the idle shutdown and the schedules; its Activity records
	// the sessions relayed here.
	Policy *policy.Engine
	// HostShutdownBound bounds POST /v1/host/shutdown.
	HostShutdownBound time.Duration
	// Work holds upgraded sessions (tunnels, console), which the HTTP
	// server forgets once hijacked, so the daemon can wait for them.
	Work interface {
		Add()
		Done()
	}
}

// response is what a handler returns: a status and a JSON body.
type response struct {
	status int
	body   any
}

func ok(body any) response       { return response{http.StatusOK, body} }
func accepted(body any) response { return response{http.StatusAccepted, body} }

// call is one authorized request: who calls, and for instance routes the
// instance the permission was checked on.
type call struct {
	r    *http.Request
	c    authz.Caller
	inst vm.Instance
	note *auditNote
}

// target names what the call acts on, for the audit log, once the handler
// has read it from the body (a create's name).
func (c call) target(t string) {
	if c.note != nil {
		c.note.target = t
	}
}

type auditNote struct{ action, target string }

// scope is what a route's permission is checked against.
type scope int

const (
	// scopeHost: the permission alone, before anything is read.
	scopeHost scope = iota
	// scopeInstance: the {name} instance is looked up and the permission
	// checked on it (the own user's rights count), before the body.
	scopeInstance
)

// route is one entry of the API. Every route has a permission; a test
// walks the table and fails on one without.
type route struct {
	pattern string
	perm    authz.Permission
	scope   scope
	// audit names the call in the audit log; mutating routes have one.
	// Refused calls are audited too (rate-limited per uid).
	audit string
	// upload marks the routes whose body is a stream of unbounded size
	// (an image, a copy into an instance); every other body is held to
	// maxBodyBytes.
	upload bool
	handle func(call) (response, error)
	stream func(http.ResponseWriter, call) error
}

// Handler is the API as an http.Handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		rt := rt
		mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) { s.serve(w, r, rt) })
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, api.Errorf(api.CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, rt route) {
	defer func() {
		// A bug in one handler must not take the daemon (and its view of
		// every VM) down with it.
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.Log.Error("panic in handler", "route", rt.pattern, "panic", p, "stack", string(debug.Stack()))
			writeError(w, api.Errorf(api.CodeInternal, "internal error handling %s", rt.pattern))
		}
	}()
	c, known := authz.FromContext(r.Context())
	if !known {
		writeError(w, api.Errorf(api.CodePermissionDenied, "could not read the caller's Unix credentials"))
		return
	}
	cl := call{r: r, c: c}
	if rt.audit != "" {
		cl.note = &auditNote{action: rt.audit, target: r.PathValue("name")}
		if cl.note.target == "" {
			cl.note.target = r.PathValue("id")
		}
	}
	// Authorization comes first, before the body is read: a caller with
	// no right costs one lookup and, for mutating routes, one
	// rate-limited audit line naming only the path's target.
	if err := s.authorize(&cl, rt); err != nil {
		if cl.note != nil {
			s.Audit.Record(audit.Who{Name: c.Name, UID: c.UID}, cl.note.action, cl.note.target, "", err)
		}
		s.fail(w, r, rt, c, err)
		return
	}
	// The handler reads the body through bounds of its own, on a shallow
	// copy of the request: the server keeps its own view of the body,
	// which is how it knows not to ask an Expect: 100-continue client for
	// a body nobody read (a refused upload is answered at once).
	body := r.Body
	if !rt.upload {
		body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	}
	bounded := *r
	bounded.Body = &progressBody{ReadCloser: body, rc: http.NewResponseController(w)}
	cl.r = &bounded
	start := time.Now()
	if rt.stream != nil {
		if err := rt.stream(w, cl); err != nil {
			s.fail(w, r, rt, c, err)
		}
		return
	}
	resp, err := rt.handle(cl)
	if cl.note != nil {
		// Accepted operations are audited when they finish, with their
		// outcome; everything else now.
		if op, isOp := resp.body.(api.Operation); err == nil && isOp && resp.status == http.StatusAccepted {
			s.Ops.NoteAudit(op.ID, cl.note.action, cl.note.target, ops.Who{Name: c.Name, UID: c.UID})
		} else {
			s.Audit.Record(audit.Who{Name: c.Name, UID: c.UID}, cl.note.action, cl.note.target, "", err)
		}
	}
	if err != nil {
		s.fail(w, r, rt, c, err)
		return
	}
	if r.Method != http.MethodGet {
		s.Log.Info("request", "route", rt.pattern, "path", r.URL.Path, "caller", c.Name, "status", resp.status, "took", time.Since(start).Round(time.Microsecond))
	}
	writeJSON(w, resp.status, resp.body)
}

// authorize checks the route's permission; for instance routes it loads
// the instance into the call. A caller who may not read instances is
// told "permission denied" rather than "not found" for one that does not
// exist, so names cannot be probed.
func (s *Server) authorize(cl *call, rt route) error {
	if rt.scope == scopeHost {
		return s.Authz.Authorize(cl.c, rt.perm)
	}
	inst, err := s.Lifecycle.InstanceByName(cl.r.PathValue("name"))
	if errors.Is(err, errdefs.ErrNotFound) {
		if derr := s.Authz.Authorize(cl.c, authz.PermRead); derr != nil {
			return derr
		}
	}
	if err != nil {
		return err
	}
	cl.inst = inst
	return s.Authz.AuthorizeInstance(cl.c, rt.perm, inst)
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, rt route, c authz.Caller, err error) {
	ae := errdefs.ToAPI(err)
	level := slog.LevelInfo
	switch ae.Code {
	case api.CodeInternal:
		level = slog.LevelError
	case api.CodePermissionDenied:
		// The audit log records refusals, rate-limited per uid; the
		// daemon's own log must not become the flood's target instead.
		level = slog.LevelDebug
	}
	s.Log.Log(r.Context(), level, "request failed", "route", rt.pattern, "caller", c.Name, "code", ae.Code, "error", ae.Message)
	writeError(w, ae)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if st, ok := body.(streamer); ok {
		// Too late for an error response: the status is out. A failed
		// write is a client gone; it sees the body cut short.
		_ = st.stream(w)
		return
	}
	// Compact: indenting a 1,000-instance list cost more than encoding
	// it. `labvm -o json` and jq pretty-print for people.
	_ = json.NewEncoder(w).Encode(body)
}

func writeError(w http.ResponseWriter, e *api.Error) {
	writeJSON(w, e.Code.HTTPStatus(), api.ErrorResponse{Error: e})
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors, so a typo in a client never silently drops a setting.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return errdefs.New(errdefs.ErrTooLarge, "", "request body over %d bytes", tooBig.Limit)
		case errors.Is(err, io.EOF):
			return errdefs.Invalidf("request body is empty; expected a JSON object")
		case errors.Is(err, errBodyStalled):
			return errdefs.New(errdefs.ErrInvalidArgument, "", "%v", err)
		}
		return errdefs.Invalidf("invalid request body: %v", err)
	}
	if dec.More() {
		return errdefs.Invalidf("invalid request body: data after the JSON object")
	}
	return nil
}

var errBodyStalled = fmt.Errorf("request body stalled: no byte for %s", bodyProgress)

// progressBody makes each read of a request body finish within
// bodyProgress: a large body may take as long as it needs, a stalled one
// is cut.
type progressBody struct {
	io.ReadCloser
	rc *http.ResponseController
}

func (b *progressBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(bodyProgress))
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		// Done: the connection's later reads (the server watching for
		// the client leaving during a long answer) have no deadline.
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return n, errBodyStalled
	}
	return n, err
}

// ctx is the request's context.
func (c call) ctx() context.Context { return c.r.Context() }
