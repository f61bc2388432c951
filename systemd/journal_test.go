package systemd

import (
	"bytes"
	"errors"
	"log/slog"
	"maps"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
)

type sent struct {
	msg  string
	pri  journal.Priority
	vars map[string]string
}

func TestJournalHandlerFields(t *testing.T) {
	tests := []struct {
		name    string
		log     func(*slog.Logger)
		wantMsg string
		wantPri journal.Priority
		want    map[string]string
	}{
		{
			name:    "attributes become fields",
			log:     func(l *slog.Logger) { l.Info("instance started", "instance", "alice-dev", "cores", 2) },
			wantMsg: "instance started", wantPri: journal.PriInfo,
			want: map[string]string{"SYSLOG_IDENTIFIER": "labvmd", "INSTANCE": "alice-dev", "CORES": "2"},
		},
		{
			name: "levels map to priorities; odd keys are cleaned",
			log: func(l *slog.Logger) {
				l.Error("stop failed", "error", errors.New("boom"), "op-id", "x1", "9lives", "y")
			},
			wantMsg: "stop failed", wantPri: journal.PriErr,
			want: map[string]string{"SYSLOG_IDENTIFIER": "labvmd", "ERROR": "boom", "OP_ID": "x1", "F_9LIVES": "y"},
		},
		{
			name:    "the journal's own fields cannot be overwritten",
			log:     func(l *slog.Logger) { l.Warn("odd", "message", "m", "priority", "0", "_uid", "0") },
			wantMsg: "odd", wantPri: journal.PriWarning,
			want: map[string]string{"SYSLOG_IDENTIFIER": "labvmd", "LABVM_MESSAGE": "m", "LABVM_PRIORITY": "0", "UID": "0"},
		},
		{
			name: "groups and With prefix their keys",
			log: func(l *slog.Logger) {
				l.With("vnet", "default").WithGroup("op").Info("step", "kind", "create", slog.Group("stage", "id", "boot"))
			},
			wantMsg: "step", wantPri: journal.PriInfo,
			want: map[string]string{"SYSLOG_IDENTIFIER": "labvmd", "VNET": "default", "OP_KIND": "create", "OP_STAGE_ID": "boot"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []sent
			h := NewJournalHandler(slog.LevelInfo, slog.NewTextHandler(&bytes.Buffer{}, nil))
			h.send = func(msg string, p journal.Priority, vars map[string]string) error {
				got = append(got, sent{msg, p, maps.Clone(vars)})
				return nil
			}
			l := slog.New(h)
			l.Debug("below the level")
			tt.log(l)
			if len(got) != 1 {
				t.Fatalf("sent %d records, want 1: %+v", len(got), got)
			}
			if got[0].msg != tt.wantMsg || got[0].pri != tt.wantPri || !maps.Equal(got[0].vars, tt.want) {
				t.Errorf("sent %q pri %d %v\nwant %q pri %d %v", got[0].msg, got[0].pri, got[0].vars, tt.wantMsg, tt.wantPri, tt.want)
			}
		})
	}
}

// TestJournalHandlerFallback: a record the journal refuses still reaches
// the fallback handler.
func TestJournalHandlerFallback(t *testing.T) {
	var buf bytes.Buffer
	h := NewJournalHandler(slog.LevelInfo, slog.NewTextHandler(&buf, nil))
	h.send = func(string, journal.Priority, map[string]string) error { return errors.New("no journal") }
	l := slog.New(h)
	l.Info("kept")
	l.With("instance", "x").Info("kept too")
	if !strings.Contains(buf.String(), "msg=kept") || !strings.Contains(buf.String(), `msg="kept too" instance=x`) {
		t.Errorf("fallback got %q", buf.String())
	}
	if n := strings.Count(buf.String(), "journal refused"); n != 1 {
		t.Errorf("the refusal is reported %d times, want once:\n%s", n, buf.String())
	}
}
