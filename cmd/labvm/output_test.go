package main

import (
	"bytes"
	"strings"
	"testing"
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
