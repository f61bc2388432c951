// Package audit owns the audit log: who did what to which target, when,
// and how it ended. The log is bounded by entries and, because every field
// is truncated, by bytes; refused calls are rate-limited per uid, so a
// user with no role can neither evict the real entries nor fill the disk.
//
// It knows nothing of HTTP or of roles: callers hand it finished facts.
package audit

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
)

const (
	// MaxEntries bounds the log; the oldest entries go first.
	MaxEntries = 20000
	// maxField bounds each text field, so an entry stays under ~1 KiB and
	// the whole log under MaxEntries KiB however long the names thrown at
	// the daemon are.
	maxTarget  = 128
	maxMessage = 512
	maxName    = 64
	// deniedBurst refused calls per uid are recorded in each deniedWindow;
	// the rest are counted and recorded as one summary entry.
	deniedBurst  = 20
	deniedWindow = time.Minute
)

// Outcomes of an entry.
const (
	OutcomeSucceeded  = "succeeded"
	OutcomeFailed     = "failed"
	OutcomeDenied     = "denied"
	OutcomeSuppressed = "suppressed"
	// OutcomeSkipped: a policy (idle shutdown, schedule) chose not to
	// act; the message says why.
	OutcomeSkipped = "skipped"
)

// Who is the part of a caller the log keeps.
type Who struct {
	Name string
	UID  int
}

// Log appends entries to the store.
type Log struct {
	store *store.Store
	log   *slog.Logger
	now   func() time.Time

	mu sync.Mutex
	// denied counts refused calls per uid in the current window.
	denied map[int]*deniedCount
}

type deniedCount struct {
	start      time.Time
	recorded   int
	suppressed int
	name       string
}

// New returns a log writing to s.
func New(s *store.Store, log *slog.Logger) *Log {
	return &Log{store: s, log: log, now: time.Now, denied: map[int]*deniedCount{}}
}

// Record appends one entry for a call that ended with err (nil: success).
// A failure to audit is logged, never hidden, but does not undo the call.
func (l *Log) Record(who Who, action, target, opID string, err error) {
	l.RecordDetail(who, action, target, opID, "", err)
}

// RecordDetail is Record with a note on what was done (a copy's path and
// bytes), kept as the entry's message; a failure's message follows it.
func (l *Log) RecordDetail(who Who, action, target, opID, detail string, err error) {
	e := store.AuditEntry{
		Time: l.now().UTC(), Caller: Truncate(who.Name, maxName), UID: who.UID,
		Action: Truncate(action, maxTarget), Target: Truncate(target, maxTarget), Outcome: OutcomeSucceeded, OpID: opID,
		Message: Truncate(detail, maxMessage),
	}
	var summary *store.AuditEntry
	if err != nil {
		ae := errdefs.ToAPI(err)
		msg := ae.Message
		if detail != "" {
			msg = detail + ": " + msg
		}
		e.Outcome, e.Code, e.Message = OutcomeFailed, string(ae.Code), Truncate(msg, maxMessage)
		if ae.Code == api.CodePermissionDenied {
			e.Outcome = OutcomeDenied
			var keep bool
			if keep, summary = l.admitDenied(who, e.Time); !keep {
				return
			}
		}
	}
	if serr := l.store.Update(func(tx *store.Tx) error {
		if summary != nil {
			if err := tx.AppendAudit(*summary, MaxEntries); err != nil {
				return err
			}
		}
		return tx.AppendAudit(e, MaxEntries)
	}); serr != nil {
		l.log.Error("write audit entry", "action", action, "caller", who.Name, "error", serr)
	}
}

// Skipped appends an entry for an action the daemon's own policy chose
// not to take (the instance was busy or already there), saying why.
func (l *Log) Skipped(who Who, action, target, why string) {
	e := store.AuditEntry{
		Time: l.now().UTC(), Caller: Truncate(who.Name, maxName), UID: who.UID,
		Action: Truncate(action, maxTarget), Target: Truncate(target, maxTarget), Outcome: OutcomeSkipped,
		Message: Truncate(why, maxMessage),
	}
	if err := l.store.Update(func(tx *store.Tx) error { return tx.AppendAudit(e, MaxEntries) }); err != nil {
		l.log.Error("write audit entry", "action", action, "caller", who.Name, "error", err)
	}
}

// admitDenied decides whether a refused call is recorded, and returns the
// summary of the previous window's suppressed calls when one just ended.
func (l *Log) admitDenied(who Who, now time.Time) (bool, *store.AuditEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.denied[who.UID]
	var summary *store.AuditEntry
	if c == nil || now.Sub(c.start) >= deniedWindow {
		if c != nil && c.suppressed > 0 {
			summary = suppressedEntry(who.UID, c, now)
		}
		c = &deniedCount{start: now, name: Truncate(who.Name, maxName)}
		l.denied[who.UID] = c
		l.pruneLocked(now)
	}
	if c.recorded < deniedBurst {
		c.recorded++
		return true, summary
	}
	c.suppressed++
	return false, summary
}

// Flush records pending summaries of suppressed refusals (at shutdown).
func (l *Log) Flush() {
	l.mu.Lock()
	var out []store.AuditEntry
	now := l.now()
	for uid, c := range l.denied {
		if c.suppressed > 0 {
			out = append(out, *suppressedEntry(uid, c, now))
		}
	}
	l.denied = map[int]*deniedCount{}
	l.mu.Unlock()
	if len(out) == 0 {
		return
	}
	if err := l.store.Update(func(tx *store.Tx) error {
		for _, e := range out {
			if err := tx.AppendAudit(e, MaxEntries); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		l.log.Error("write audit summary", "error", err)
	}
}

// pruneLocked forgets uids whose window ended with nothing suppressed, so
// the map does not grow with every uid that was ever refused.
func (l *Log) pruneLocked(now time.Time) {
	if len(l.denied) < 1024 {
		return
	}
	for uid, c := range l.denied {
		if now.Sub(c.start) >= deniedWindow && c.suppressed == 0 {
			delete(l.denied, uid)
		}
	}
}

func suppressedEntry(uid int, c *deniedCount, now time.Time) *store.AuditEntry {
	return &store.AuditEntry{
		Time: now.UTC(), Caller: c.name, UID: uid, Action: "refused calls", Outcome: OutcomeSuppressed,
		Code: string(api.CodePermissionDenied),
		Message: fmt.Sprintf("%d more refused calls between %s and %s were not recorded one by one",
			c.suppressed, c.start.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)),
	}
}

// Entries returns matching entries, oldest first.
func (l *Log) Entries(f store.AuditFilter) ([]store.AuditEntry, error) {
	var entries []store.AuditEntry
	err := l.store.View(func(tx *store.Tx) error {
		var err error
		entries, err = tx.Audit(f)
		return err
	})
	return entries, err
}

// Truncate cuts s to at most n bytes of valid UTF-8, marking the cut.
func Truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
