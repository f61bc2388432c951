package httpapi

import (
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/labvm/labvm/daemon/audit"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
)

// auditNow records a streaming call, which the server cannot audit after
// the fact: it has answered by then.
func (s *Server) auditNow(c call, err error) {
	if c.note != nil {
		s.Audit.Record(audit.Who{Name: c.c.Name, UID: c.c.UID}, c.note.action, c.note.target, "", err)
	}
}

// mayRead says whether the caller may see an operation: their own, or
// any with computes/read.
func (s *Server) mayRead(c call, op store.Operation) bool {
	if op.Caller == c.c.Name && (op.CallerUID == nil || *op.CallerUID == c.c.UID) {
		return true
	}
	return s.Authz.Has(c.c, authz.PermRead)
}

func (s *Server) listOperations(c call) (response, error) {
	list, err := s.Ops.List()
	out := make([]any, 0, len(list))
	for _, op := range list {
		out = append(out, apiOperation(op))
	}
	return ok(out), err
}

// listInstanceOperations is one instance's operations, for whoever may
// read the instance (its own user included, who may lack computes/read
// for the whole list): whoever started them.
func (s *Server) listInstanceOperations(c call) (response, error) {
	list, err := s.Ops.OfInstance(c.inst.ID, c.inst.Name, c.inst.CreatedAt)
	out := make([]any, 0, len(list))
	for _, op := range list {
		out = append(out, apiOperation(op))
	}
	return ok(out), err
}

func (s *Server) getOperation(c call) (response, error) {
	op, _, err := s.Ops.Get(c.r.PathValue("id"))
	if err != nil {
		return response{}, err
	}
	if !s.mayRead(c, op) {
		return response{}, s.Authz.Authorize(c.c, authz.PermRead)
	}
	return ok(apiOperation(op)), nil
}

// waitOperation streams the operation as newline-delimited JSON: one
// object now and one per change, until it is done or the client leaves.
func (s *Server) waitOperation(w http.ResponseWriter, c call) error {
	id := c.r.PathValue("id")
	op, changed, err := s.Ops.Get(id)
	if err != nil {
		return err
	}
	if !s.mayRead(c, op) {
		return s.Authz.Authorize(c.c, authz.PermRead)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	for {
		if err := enc.Encode(apiOperation(op)); err != nil {
			return nil // client gone; nothing to report to it
		}
		if flusher != nil {
			flusher.Flush()
		}
		if op.DoneAt != nil || changed == nil {
			return nil
		}
		select {
		case <-changed:
		case <-c.ctx().Done():
			return nil
		}
		if op, changed, err = s.Ops.Get(id); err != nil {
			return nil
		}
	}
}

// streamEvents is GET /v1/events: every operation change, as
// newline-delimited JSON, until the client leaves; with ?instances=1
// also every instance state change (api.InstanceEvent lines, marked by
// their "event" field). Readers see all; anyone else only their own
// operations and the instances they own or created.
func (s *Server) streamEvents(w http.ResponseWriter, c call) error {
	withInstances, err := eventsQuery(c.r.URL.Query())
	if err != nil {
		return err
	}
	seeAll := s.Authz.Has(c.c, authz.PermRead)
	ch, unsubscribe := s.Ops.Events.Subscribe()
	defer unsubscribe()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		var line any
		select {
		case <-c.ctx().Done():
			return nil
		case ev := <-ch:
			switch {
			case ev.Op != nil:
				if !seeAll && !s.mayRead(c, *ev.Op) {
					continue
				}
				line = apiOperation(*ev.Op)
			case ev.Instance != nil && withInstances:
				inst := ev.Instance.New
				if inst == nil {
					inst = ev.Instance.Old
				}
				if !seeAll && !authz.IsOwnUser(c.c, *inst) && !authz.IsCreator(c.c, *inst) {
					continue
				}
				line = apiInstanceEvent(*ev.Instance)
			default:
				continue
			}
		}
		if err := enc.Encode(line); err != nil {
			return nil // client gone
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// eventsQuery reads GET /v1/events' parameters: instances=1 (or true)
// adds instance events. Anything else is refused, so a typo is not a
// stream silently without them.
func eventsQuery(q url.Values) (withInstances bool, err error) {
	for k := range q {
		if k != "instances" {
			return false, errdefs.Invalidf("unknown query parameter %q; GET /v1/events takes instances=1", k)
		}
	}
	switch v := q.Get("instances"); v {
	case "", "0", "false":
		return false, nil
	case "1", "true":
		return true, nil
	default:
		return false, errdefs.Invalidf("instances=%q: use 1 or 0", v)
	}
}
