package systemd

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

// JournalAttached reports whether labvmd's stderr is the journal's stream
// (systemd set JOURNAL_STREAM to it) and the journal's native socket
// answers: then logging through NewJournalHandler keeps each attribute as
// its own field (journalctl -u labvmd INSTANCE=alice-dev) instead of one
// text line. Read once, at start, like the rest of the environment.
func JournalAttached() bool {
	ok, err := journal.StderrIsJournalStream()
	return err == nil && ok && journal.Enabled()
}

// JournalHandler is a slog.Handler that sends each record to the journal
// with go-systemd's journal.Send: the message as MESSAGE, the level as
// PRIORITY, and every attribute as a field of its own, its key upper-cased
// and made a valid field name (instance → INSTANCE, a group g's key k →
// G_K). If the journal refuses a record, it is written to fallback.
type JournalHandler struct {
	level    slog.Leveler
	attrs    []slog.Attr
	groups   []string
	fallback slog.Handler
	send     func(msg string, p journal.Priority, vars map[string]string) error
	// refused is shared by a handler and its WithAttrs/WithGroup copies,
	// so a journal that refuses records is reported once, not per line.
	refused *sync.Once
}

// NewJournalHandler logs records at level and above to the journal,
// falling back to fallback (e.g. a text handler on stderr).
func NewJournalHandler(level slog.Leveler, fallback slog.Handler) *JournalHandler {
	return &JournalHandler{level: level, fallback: fallback, send: journal.Send, refused: &sync.Once{}}
}

// Enabled implements slog.Handler.
func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// Handle implements slog.Handler.
func (h *JournalHandler) Handle(ctx context.Context, r slog.Record) error {
	vars := map[string]string{"SYSLOG_IDENTIFIER": "labvmd"}
	prefix := strings.Join(h.groups, "_")
	for _, a := range h.attrs {
		addField(vars, "", a) // prefixed by WithAttrs with the groups open then
	}
	r.Attrs(func(a slog.Attr) bool {
		addField(vars, prefix, a)
		return true
	})
	if err := h.send(r.Message, priority(r.Level), vars); err != nil {
		h.refused.Do(func() {
			_ = h.fallback.Handle(ctx, slog.NewRecord(time.Now(), slog.LevelWarn, "journal refused a record; logging to stderr", 0))
		})
		return h.fallback.Handle(ctx, r)
	}
	return nil
}

// WithAttrs implements slog.Handler.
func (h *JournalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	// Attributes added now belong under the groups open now.
	for _, a := range attrs {
		if len(h.groups) > 0 {
			a = slog.Attr{Key: strings.Join(h.groups, "_") + "_" + a.Key, Value: a.Value}
		}
		c.attrs = append(c.attrs[:len(c.attrs):len(c.attrs)], a)
	}
	c.fallback = h.fallback.WithAttrs(attrs)
	return &c
}

// WithGroup implements slog.Handler.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.groups = append(c.groups[:len(c.groups):len(c.groups)], name)
	c.fallback = h.fallback.WithGroup(name)
	return &c
}

// addField stores a under its journal field name, flattening groups.
func addField(vars map[string]string, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	key := a.Key
	if prefix != "" {
		key = prefix + "_" + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			addField(vars, key, g)
		}
		return
	}
	vars[fieldName(key)] = a.Value.String()
}

// fieldName turns a slog key into a journal field name: upper-case
// letters, digits and underscores, not starting with an underscore or a
// digit (fields starting with "_" are the journal's trusted ones).
func fieldName(key string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(key) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := strings.TrimLeft(b.String(), "_")
	if name == "" || (name[0] >= '0' && name[0] <= '9') {
		name = "F_" + name
	}
	if reservedField(name) {
		name = "LABVM_" + name
	}
	if len(name) > 64 { // the journal's limit on field names
		name = name[:64]
	}
	return name
}

// reservedField reports the journal's own fields, which an attribute must
// not overwrite (an attribute "message" would add a second MESSAGE).
func reservedField(name string) bool {
	switch name {
	case "MESSAGE", "MESSAGE_ID", "PRIORITY", "CODE_FILE", "CODE_LINE", "CODE_FUNC", "ERRNO",
		"SYSLOG_IDENTIFIER", "SYSLOG_FACILITY", "SYSLOG_PID", "SYSLOG_TIMESTAMP", "INVOCATION_ID", "TID":
		return true
	}
	return false
}

// priority maps slog levels to syslog priorities.
func priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	default:
		return journal.PriDebug
	}
}

var _ slog.Handler = (*JournalHandler)(nil)

// String names the handler in logs and test failures.
func (h *JournalHandler) String() string { return fmt.Sprintf("journal(level %s)", h.level.Level()) }
