package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

// maxBodyBytes bounds request bodies: the largest legitimate one is a
// create with an SSH key, far below this.
const maxBodyBytes = 1 << 20

// response is what a handler returns: a status and a JSON body.
type response struct {
	status int
	body   any
}

func ok(body any) response       { return response{http.StatusOK, body} }
func accepted(body any) response { return response{http.StatusAccepted, body} }

// handlerFunc is a route's handler. It returns a value or an error and
// never writes to the ResponseWriter, so every error takes one path.
type handlerFunc func(r *http.Request, c Caller) (response, error)

// streamFunc is a route that writes a stream itself (operation progress).
type streamFunc func(w http.ResponseWriter, r *http.Request, c Caller) error

type route struct {
	pattern string
	// action names the call in the audit log; mutating routes have one.
	action string
	handle handlerFunc
	stream streamFunc
	// upload marks the one route whose body is a stream of unbounded size
	// (an image); every other body is held to maxBodyBytes.
	upload bool
}

// routes is the whole API, in one table.
func (d *Daemon) routes() []route {
	return []route{
		{pattern: "GET /v1/info", handle: d.getInfo},
		{pattern: "GET /v1/whoami", handle: d.whoami},
		{pattern: "GET /v1/sizes", handle: d.listSizes},

		{pattern: "GET /v1/images", handle: d.listImages},
		{pattern: "POST /v1/images", action: "images/write", handle: d.importImage, upload: true},
		{pattern: "POST /v1/images/pull", action: "images/write", handle: d.pullImage},
		{pattern: "GET /v1/images/{name}", handle: d.getImage},
		{pattern: "DELETE /v1/images/{name}", action: "images/delete", handle: d.deleteImage},

		{pattern: "GET /v1/instances", handle: d.listInstances},
		{pattern: "POST /v1/instances", action: "computes/write", handle: d.createInstance},
		{pattern: "GET /v1/instances/{name}", handle: d.getInstance},
		{pattern: "PATCH /v1/instances/{name}", action: "computes/write", handle: d.updateInstance},
		{pattern: "DELETE /v1/instances/{name}", action: "computes/delete", handle: d.deleteInstance},
		{pattern: "POST /v1/instances/{name}/start", action: "computes/start/action", handle: d.startInstance},
		{pattern: "POST /v1/instances/{name}/stop", action: "computes/stop/action", handle: d.stopInstance},
		{pattern: "POST /v1/instances/{name}/restart", action: "computes/restart/action", handle: d.restartInstance},
		{pattern: "GET /v1/instances/{name}/logs", handle: d.getLogs},
		{pattern: "POST /v1/instances/{name}/exec", action: "computes/applicationaccess/action:exec", handle: d.execInstance},
		{pattern: "POST /v1/instances/{name}/jobs", action: "computes/applicationaccess/action:job-submit", handle: d.submitJob},
		{pattern: "GET /v1/instances/{name}/jobs", handle: d.listJobs},
		{pattern: "PUT /v1/instances/{name}/jobs/parallel", action: "computes/applicationaccess/action:job-parallel", handle: d.setJobParallel},
		{pattern: "GET /v1/instances/{name}/jobs/{id}", handle: d.getJob},
		{pattern: "POST /v1/instances/{name}/jobs/{id}/cancel", action: "computes/applicationaccess/action:job-cancel", handle: d.cancelJobHandler},
		{pattern: "GET /v1/instances/{name}/jobs/{id}/logs", stream: d.jobLogs}, // audits itself
		// Upgraded to raw byte streams; they audit themselves.
		{pattern: "GET /v1/instances/{name}/tunnel", stream: d.tunnelInstance},
		{pattern: "GET /v1/instances/{name}/console", stream: d.consoleInstance},

		{pattern: "GET /v1/operations", handle: d.listOperations},
		{pattern: "GET /v1/operations/{id}", handle: d.getOperation},
		{pattern: "GET /v1/operations/{id}/wait", stream: d.waitOperation},
		{pattern: "GET /v1/events", stream: d.streamEvents},

		{pattern: "GET /v1/roles", handle: d.listRoles},
		{pattern: "POST /v1/roles", action: "roles/write", handle: d.assignRole},
		{pattern: "DELETE /v1/roles/{principal}/{role}", action: "roles/delete", handle: d.removeRole},
		{pattern: "GET /v1/networks", handle: d.listNetworks},
		{pattern: "POST /v1/networks", action: "networks/write", handle: d.createNetwork},
		{pattern: "GET /v1/networks/{name}", handle: d.getNetwork},
		{pattern: "DELETE /v1/networks/{name}", action: "networks/delete", handle: d.deleteNetwork},
		{pattern: "POST /v1/networks/{name}/subnets", action: "networks/write", handle: d.addSubnet},
		{pattern: "DELETE /v1/networks/{name}/subnets/{subnet}", action: "networks/delete", handle: d.removeSubnet},
		{pattern: "GET /v1/quota", handle: d.getQuota},
		{pattern: "PUT /v1/quota", action: "quotas/write", handle: d.setQuota},
		{pattern: "GET /v1/audit", handle: d.listAudit},
		{pattern: "POST /v1/host/shutdown", action: "host/shutdown", handle: d.hostShutdown},
		{pattern: "GET /v1/doctor", handle: d.getDoctor},
		{pattern: "POST /v1/doctor", action: "doctor/repair", handle: d.runDoctor},
	}
}

func (d *Daemon) handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range d.routes() {
		rt := rt
		mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			d.serve(w, r, rt)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, api.Errorf(api.CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func (d *Daemon) serve(w http.ResponseWriter, r *http.Request, rt route) {
	defer func() {
		// A bug in one handler must not take the daemon (and its view of
		// every VM) down with it.
		if p := recover(); p != nil {
			d.log.Error("panic in handler", "route", rt.pattern, "panic", p)
			writeError(w, api.Errorf(api.CodeInternal, "internal error handling %s", rt.pattern))
		}
	}()
	c, known := callerFrom(r.Context())
	if !known {
		writeError(w, api.Errorf(api.CodePermissionDenied, "could not read the caller's Unix credentials"))
		return
	}
	if !rt.upload {
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	}
	start := time.Now()
	if rt.stream != nil {
		if err := rt.stream(w, r, c); err != nil {
			writeError(w, toAPIError(err))
		}
		return
	}
	var note *auditNote
	if rt.action != "" {
		r, note = withAuditNote(r, rt.action)
	}
	resp, err := rt.handle(r, c)
	if note != nil {
		// Accepted operations are audited when they finish, with their
		// outcome; everything else now.
		if op, isOp := resp.body.(api.Operation); err == nil && isOp && resp.status == http.StatusAccepted {
			d.ops.noteAudit(op.ID, note.action, note.target, c)
		} else {
			d.audit(c, note.action, note.target, "", err)
		}
	}
	if err != nil {
		ae := toAPIError(err)
		level := slog.LevelInfo
		if ae.Code == api.CodeInternal {
			level = slog.LevelError
		}
		d.log.Log(r.Context(), level, "request failed", "route", rt.pattern, "caller", c.Name, "code", ae.Code, "error", ae.Message)
		writeError(w, ae)
		return
	}
	if r.Method != http.MethodGet {
		d.log.Info("request", "route", rt.pattern, "path", r.URL.Path, "caller", c.Name, "status", resp.status, "took", time.Since(start).Round(time.Microsecond))
	}
	writeJSON(w, resp.status, resp.body)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
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
			return &api.Error{Code: api.CodeTooLarge, Message: fmt.Sprintf("request body over %d bytes", tooBig.Limit)}
		case errors.Is(err, io.EOF):
			return api.Errorf(api.CodeInvalidArgument, "request body is empty; expected a JSON object")
		}
		return api.Errorf(api.CodeInvalidArgument, "invalid request body: %v", err)
	}
	if dec.More() {
		return api.Errorf(api.CodeInvalidArgument, "invalid request body: data after the JSON object")
	}
	return nil
}

// listen opens the API socket. A socket file left by a dead daemon is
// removed, but only after dialling it proves nobody is listening: removing
// a live daemon's socket would orphan it silently.
func listen(path, group string) (net.Listener, error) {
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

// serveHTTP runs the API server until ctx ends, then shuts it down.
func (d *Daemon) serveHTTP(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           d.handler(),
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext:       withCaller,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx)
	<-errc
	return nil
}
