package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

func TestSafeText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice-dev", "alice-dev"},
		{"ünïcode ok", "ünïcode ok"},
		{"evil\x1b[2J\x1b[Hname", `evil\x1b[2J\x1b[Hname`},
		{"two\nlines", `two\nlines`},
		{"tab\there", `tab\there`},
		{"cr\rover", `cr\rover`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"c1\u009bcsi", `c1\u009bcsi`},
	}
	for _, tt := range tests {
		if got := safeText(tt.in); got != tt.want {
			t.Errorf("safeText(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestTableEscapesCells: one hostile cell cannot add a row or escape.
func TestTableEscapesCells(t *testing.T) {
	var b bytes.Buffer
	if err := table(&b, []string{"caller", "target"}, [][]string{{"mallory", "x\n2026-01-01  root  images/delete"}}); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(b.String(), "\n"); lines != 2 {
		t.Fatalf("table has %d lines, want 2:\n%s", lines, b.String())
	}
	if strings.ContainsRune(b.String(), 0x1b) {
		t.Fatalf("escape passed through: %q", b.String())
	}
}

func TestSafeLines(t *testing.T) {
	got := safeLines("boot ok\r\n\x1b]0;pwned\x07title\n\tindented\n")
	want := "boot ok\n\\x1b]0;pwned\\atitle\n\tindented\n"
	if got != want {
		t.Fatalf("safeLines = %q, want %q", got, want)
	}
}

// TestTableIsTabwriterLayout: table lays columns out exactly as
// text/tabwriter did before it (and still does for uneven rows).
func TestTableIsTabwriterLayout(t *testing.T) {
	header := []string{"name", "state", "ip", "owner"}
	for _, tt := range []struct {
		name string
		rows [][]string
	}{
		{"none", nil},
		{"plain", [][]string{{"dev", "Running", "10.0.0.2", "alice"}, {"a-much-longer-name", "Stopped", "-", "bob"}}},
		{"wide runes and escapes", [][]string{{"zoë", "日本語", "", "x\ty"}, {"é", "\x1b[2J", "ok", ""}}},
		{"empty cells", [][]string{{"", "", "", ""}, {"a", "", "b", ""}}},
		{"uneven rows", [][]string{{"a", "b"}, {"c", "d", "e", "f", "g"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var want, got bytes.Buffer
			tw := tabwriter.NewWriter(&want, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, strings.ToUpper(strings.Join(header, "\t")))
			for _, r := range tt.rows {
				cells := make([]string, len(r))
				for i, c := range r {
					cells[i] = safeText(c)
				}
				fmt.Fprintln(tw, strings.Join(cells, "\t"))
			}
			if err := tw.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := table(&got, header, tt.rows); err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Errorf("table:\n%q\ntabwriter:\n%q", got.String(), want.String())
			}
		})
	}
}

// TestPrintRawJSON: the daemon's bytes passed through print as the
// decoded value would have.
func TestPrintRawJSON(t *testing.T) {
	for _, raw := range []string{`[]`, "[{\"a\":1,\"b\":[\"x\",null]}\n,{\"a\":2,\"b\":{}}\n]\n", `{"html":"\u003cb\u003e"}`} {
		var v any
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			t.Fatal(err)
		}
		var want, got bytes.Buffer
		if err := printJSON(&want, v); err != nil {
			t.Fatal(err)
		}
		if err := printRawJSON(&got, []byte(raw)); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("printRawJSON(%q) = %q, want %q", raw, got.String(), want.String())
		}
	}
	var b bytes.Buffer
	if err := printRawJSON(&b, []byte(`[{"cut short`)); err == nil || b.Len() > 0 {
		t.Errorf("invalid JSON: %v, printed %q", err, b.String())
	}
}

func TestAgo(t *testing.T) {
	now := time.Now()
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{5 * time.Second, "5s ago"},
		{90 * time.Second, "1m ago"},
		{3 * time.Hour, "3h ago"},
		{47 * time.Hour, "47h ago"},
		{50 * 24 * time.Hour, "50d ago"},
	} {
		if got := ago(now.Add(-tt.d)); got != tt.want {
			t.Errorf("ago(-%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestByteMeterLine(t *testing.T) {
	tests := []struct {
		name    string
		verb    string
		label   string
		total   int64
		n       int64
		elapsed time.Duration
		want    string
	}{
		{"known total with rate", "Copying", "box:/x", 4 << 20, 1 << 20, 2 * time.Second, "Copying box:/x: 1 MiB / 4 MiB (25%) 512 KiB/s"},
		{"unknown total, label escaped", "Copying", "stdin\x1b[2J", -1, 3 << 20, time.Second, `Copying stdin\x1b[2J: 3 MiB 3 MiB/s`},
		{"too early for a rate", "Uploading", "disk.img", 1 << 20, 1 << 19, 100 * time.Millisecond, "Uploading disk.img: 512 KiB / 1 MiB (50%)"},
		{"share never above 100%", "Uploading", "disk.img", 1 << 20, 2 << 20, 0, "Uploading disk.img: 2 MiB / 1 MiB (100%)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newByteMeter(nil, true, tt.verb, tt.label, tt.total)
			if got := m.line(tt.n, tt.elapsed); got != tt.want {
				t.Fatalf("line = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestByteMeterDraws(t *testing.T) {
	tests := []struct {
		name string
		live bool
		want string
	}{
		{name: "terminal", live: true, want: "\r\x1b[KUploading disk.img: 1 MiB / 1 MiB (100%)\n"},
		{name: "not a terminal", live: false, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			m := newByteMeter(&buf, tt.live, "Uploading", "disk.img", 1<<20)
			m.update(1 << 19) // drawn: the first update always is
			m.update(3 << 18) // skipped: under 250 ms since the last draw
			m.update(1 << 20) // drawn: the total always is
			m.stop()
			got := buf.String()
			if tt.want == "" {
				if got != "" {
					t.Fatalf("off a terminal the meter printed %q", got)
				}
				return
			}
			if strings.Count(got, "\r") != 2 || strings.Contains(got, "768 KiB") || !strings.HasSuffix(got, tt.want) {
				t.Fatalf("output %q: want two draws (the throttled one skipped) ending in %q", got, tt.want)
			}
		})
	}
}
