package daemon

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
)

// maxAuditEntries bounds the audit log; the oldest entries go first.
const maxAuditEntries = 20000

// auditNote travels with a request so handlers can name the target when
// it is in the body rather than the path.
type auditNote struct {
	action string
	target string
}

type auditKey struct{}

// noteTarget records what a request acts on, for the audit log.
func noteTarget(r *http.Request, target string) {
	if n, ok := r.Context().Value(auditKey{}).(*auditNote); ok {
		n.target = target
	}
}

func withAuditNote(r *http.Request, action string) (*http.Request, *auditNote) {
	n := &auditNote{action: action, target: r.PathValue("name")}
	if n.target == "" {
		n.target = r.PathValue("id")
	}
	return r.WithContext(context.WithValue(r.Context(), auditKey{}, n)), n
}

// audit appends one entry. A failure to audit is logged, never hidden,
// but does not undo the call it describes.
func (d *Daemon) audit(c Caller, action, target, opID string, err error) {
	e := store.AuditEntry{
		Time: time.Now().UTC(), Caller: c.Name, UID: c.UID,
		Action: action, Target: target, Outcome: "succeeded", OpID: opID,
	}
	if err != nil {
		ae := toAPIError(err)
		e.Outcome, e.Code, e.Message = "failed", string(ae.Code), ae.Message
		if ae.Code == api.CodePermissionDenied {
			e.Outcome = "denied"
		}
	}
	if serr := d.store.Update(func(tx *store.Tx) error { return tx.AppendAudit(e, maxAuditEntries) }); serr != nil {
		d.log.Error("write audit entry", "action", action, "caller", c.Name, "error", serr)
	}
}

func (d *Daemon) listAudit(r *http.Request, c Caller) (response, error) {
	if err := d.authorize(c, PermManageRoles); err != nil {
		return response{}, err
	}
	q := r.URL.Query()
	f := store.AuditFilter{Target: q.Get("instance"), Caller: q.Get("caller"), Limit: 1000}
	if s := q.Get("since"); s != "" {
		dur, err := time.ParseDuration(s)
		if err != nil || dur <= 0 {
			return response{}, invalidf("since %q: want a duration like 30m or 24h", s)
		}
		f.Since = time.Now().Add(-dur)
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return response{}, invalidf("limit %q: want a positive number", s)
		}
		f.Limit = n
	}
	var entries []store.AuditEntry
	err := d.store.View(func(tx *store.Tx) error {
		var err error
		entries, err = tx.Audit(f)
		return err
	})
	out := make([]api.AuditEntry, 0, len(entries))
	for _, e := range entries {
		out = append(out, api.AuditEntry{Seq: e.Seq, Time: e.Time, Caller: e.Caller, UID: e.UID, Action: e.Action,
			Target: e.Target, Outcome: e.Outcome, Code: e.Code, Message: e.Message, Operation: e.OpID})
	}
	return ok(out), err
}
