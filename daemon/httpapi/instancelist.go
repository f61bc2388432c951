package httpapi

import (
	"bufio"
	"encoding/json"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/vm"
)

// listInstances: readers see every instance; anyone else sees only their
// own, and is refused when they have none (they have no business here).
//
// The list comes from the store's shared snapshot (no copy, no sort) and
// is written one instance at a time (instanceList), so listing 10,000
// instances never holds them all encoded, nor as wire structs, at once.
// `?view=summary` is what `labvm list` shows, encoded without reflection.
func (s *Server) listInstances(c call) (response, error) {
	q := c.r.URL.Query()
	view := q.Get("view")
	switch view {
	case "", api.ViewFull, api.ViewSummary:
	default:
		return response{}, errdefs.New(errdefs.ErrInvalidArgument, "use view=full or view=summary",
			"unknown view %q", view)
	}
	seeAll := s.Authz.Has(c.c, authz.PermRead)
	owner := q.Get("owner")
	if q.Has("mine") {
		owner = c.c.Name
	}
	all := s.Lifecycle.InstanceSnapshot()
	out := make([]*vm.Instance, 0, len(all))
	owns := false
	for _, inst := range all {
		mine := authz.IsOwnUser(c.c, *inst) || authz.IsCreator(c.c, *inst)
		owns = owns || mine
		if !seeAll && !mine {
			continue
		}
		if owner != "" && inst.Owner() != owner && inst.Creator != owner {
			continue
		}
		out = append(out, inst)
	}
	if !seeAll && !owns {
		return response{}, s.Authz.Authorize(c.c, authz.PermRead)
	}
	return ok(instanceList{s: s, list: out, summary: view == api.ViewSummary}), nil
}

// streamer is a response body that writes itself piece by piece, for
// bodies too large to build whole first.
type streamer interface {
	stream(w io.Writer) error
}

// instanceList is the body of GET /v1/instances: a JSON array written one
// element at a time, each with its state of the moment (jobs, the
// operation holding it).
type instanceList struct {
	s       *Server
	list    []*vm.Instance
	summary bool
}

func (l instanceList) stream(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	var buf []byte
	if err := bw.WriteByte('['); err != nil {
		return err
	}
	for i, inst := range l.list {
		if i > 0 {
			if err := bw.WriteByte(','); err != nil {
				return err
			}
		}
		if l.summary {
			buf = appendSummary(buf[:0], l.s.apiSummary(inst))
			if _, err := bw.Write(buf); err != nil {
				return err
			}
			continue
		}
		// Encode ends each element with a newline: whitespace between
		// elements, valid JSON.
		if err := enc.Encode(l.s.apiInstance(*inst)); err != nil {
			return err
		}
	}
	if _, err := bw.WriteString("]\n"); err != nil {
		return err
	}
	return bw.Flush()
}

// apiSummary is an instance as the summary view shows it.
func (s *Server) apiSummary(inst *vm.Instance) api.InstanceSummary {
	out := api.InstanceSummary{
		ID: inst.ID, Name: inst.Name, State: apiState(inst.State), Size: inst.Size.Name,
		Image: inst.Image, Owner: inst.Owner(), CreatedAt: inst.CreatedAt,
	}
	if inst.IP.IsValid() {
		out.IP = inst.IP.String()
	}
	out.JobsRunning, out.JobsQueued = s.Jobs.Counts(inst.ID)
	return out
}

// appendSummary appends v as encoding/json would write it (the same
// bytes; a test holds it to that), without reflection.
func appendSummary(b []byte, v api.InstanceSummary) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, v.ID)
	b = append(b, `,"name":`...)
	b = appendJSONString(b, v.Name)
	b = append(b, `,"state":`...)
	b = appendJSONString(b, string(v.State))
	b = append(b, `,"size":`...)
	b = appendJSONString(b, v.Size)
	b = append(b, `,"image":`...)
	b = appendJSONString(b, v.Image)
	b = append(b, `,"ip":`...)
	b = appendJSONString(b, v.IP)
	b = append(b, `,"owner":`...)
	b = appendJSONString(b, v.Owner)
	b = append(b, `,"jobs_running":`...)
	b = strconv.AppendInt(b, int64(v.JobsRunning), 10)
	b = append(b, `,"jobs_queued":`...)
	b = strconv.AppendInt(b, int64(v.JobsQueued), 10)
	b = append(b, `,"created_at":"`...)
	b = v.CreatedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `"}`...)
	return b
}

// appendJSONString appends s quoted. Names, states, sizes and addresses
// are plain ASCII, written as they are; anything else (control
// characters, quotes, HTML-sensitive or non-ASCII bytes) goes through
// encoding/json, so the escaping is exactly its own.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, err := json.Marshal(s)
			if err != nil { // a string always encodes
				return append(b, `""`...)
			}
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
