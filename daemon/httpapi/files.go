package httpapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/audit"
	"github.com/labvm/labvm/daemon/errdefs"
)

// copyIn receives a file, or a directory as a tar stream, as the request
// body and writes it into the instance as its user. The body goes to the
// guest as it arrives: nothing holds more than one 1 MiB buffer of it.
func (s *Server) copyIn(w http.ResponseWriter, c call) error {
	req, err := api.ParseCopyInQuery(c.r.URL.Query())
	if err != nil {
		err = errdefs.Invalidf("%v", err)
		s.auditCopy(c, "in", c.r.URL.Query().Get("path"), api.CopyResult{}, err)
		return err
	}
	body := &readCounter{r: c.r.Body}
	res, err := s.Lifecycle.CopyIn(c.ctx(), c.inst, req, body)
	s.auditCopy(c, "in", req.Path, res, err)
	if err == nil {
		writeJSON(w, http.StatusOK, res)
		return nil
	}
	if body.n == 0 {
		// Refused before the upload began: with Expect: 100-continue the
		// client has not sent a byte, and reading would ask it to.
		return err
	}
	// The client is still sending. Answer first, then read and drop the
	// rest, so it reads the error instead of a broken pipe; it stops
	// sending as soon as it has the answer.
	_ = http.NewResponseController(w).EnableFullDuplex()
	s.Log.Info("copy in failed", "instance", c.inst.Name, "caller", c.c.Name, "error", err)
	writeError(w, errdefs.ToAPI(err))
	_ = http.NewResponseController(w).Flush()
	_, _ = io.Copy(io.Discard, c.r.Body)
	return nil
}

// readCounter counts the bytes read through it.
type readCounter struct {
	r io.Reader
	n int64
}

func (r *readCounter) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += int64(n)
	return n, err
}

// copyOut sends a guest file, or a directory as a tar stream. A failure
// before the first byte is an ordinary error answer; after it, the body
// ends early and the Labvm-Copy-Error trailer carries the error.
func (s *Server) copyOut(w http.ResponseWriter, c call) error {
	req, err := api.ParseCopyOutQuery(c.r.URL.Query())
	if err != nil {
		err = errdefs.Invalidf("%v", err)
		s.auditCopy(c, "out", c.r.URL.Query().Get("path"), api.CopyResult{}, err)
		return err
	}
	started := false
	start := func(info api.CopyOutInfo) io.Writer {
		started = true
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Trailer", api.TrailerCopyFail)
		h.Set(api.HeaderCopyKind, string(info.Kind))
		h.Set(api.HeaderCopyMode, fmt.Sprintf("%04o", info.Mode&0o777))
		h.Set(api.HeaderCopySize, strconv.FormatInt(info.Size, 10))
		h.Set(api.HeaderCopyPath, info.Path)
		w.WriteHeader(http.StatusOK)
		return w
	}
	res, err := s.Lifecycle.CopyOut(c.ctx(), c.inst, req, start)
	s.auditCopy(c, "out", req.Path, res, err)
	if err != nil && !started {
		return err
	}
	if err != nil {
		b, _ := json.Marshal(api.ErrorResponse{Error: errdefs.ToAPI(err)})
		w.Header().Set(api.TrailerCopyFail, string(b))
		s.Log.Info("copy out failed after it started", "instance", c.inst.Name, "caller", c.c.Name, "error", err)
	}
	return nil
}

// auditCopy records a copy with its direction, guest path and bytes.
func (s *Server) auditCopy(c call, dir, asked string, res api.CopyResult, err error) {
	p := res.Path
	if p == "" {
		p = asked
	}
	detail := fmt.Sprintf("%s %s, %d bytes", dir, p, res.Bytes)
	s.Audit.RecordDetail(audit.Who{Name: c.c.Name, UID: c.c.UID}, c.note.action, c.note.target, "", detail, err)
}
