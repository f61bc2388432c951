package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/labvm/labvm/storage"
	"golang.org/x/sys/unix"
)

func (a *app) json() bool { return a.output == "json" }

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printRawJSON writes JSON as printJSON would have written it decoded:
// indented, one value, a newline after it. raw that is not JSON is an
// error, not output.
func printRawJSON(w io.Writer, raw []byte) error {
	var b bytes.Buffer
	b.Grow(len(raw) + len(raw)/4)
	if err := json.Indent(&b, bytes.TrimSpace(raw), "", "  "); err != nil {
		return fmt.Errorf("labvmd sent invalid JSON: %w", err)
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// printJSONLine writes v as one line, for streams.
func printJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// table writes aligned columns; the header row is upper-cased. Cells are
// printed safe: a name or message that carries terminal escapes or line
// breaks (a hostile caller's, recorded in the audit log) is shown escaped.
//
// The layout is text/tabwriter's (minwidth 0, padding 2, spaces): each
// column as wide as its widest cell in runes plus two, the last one
// unpadded. Done here in two passes over the cells, it costs a fraction
// of tabwriter's time on 10,000 rows; rows of uneven length still go
// through tabwriter.
func table(w io.Writer, header []string, rows [][]string) error {
	lines := make([][]string, 0, len(rows)+1)
	up := make([]string, len(header))
	for i, h := range header {
		up[i] = strings.ToUpper(h)
	}
	lines = append(lines, up)
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = safeText(c)
		}
		lines = append(lines, cells)
	}
	for _, l := range lines {
		if len(l) != len(header) {
			return tabTable(w, lines)
		}
	}
	widths := make([]int, len(header))
	for _, l := range lines {
		for i, c := range l[:len(l)-1] {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	// A bufio.Writer keeps its first write error and Flush returns it.
	bw := bufio.NewWriterSize(w, 64<<10)
	for _, l := range lines {
		for i, c := range l {
			_, _ = bw.WriteString(c)
			if i == len(l)-1 {
				break
			}
			for pad := widths[i] - utf8.RuneCountInString(c) + 2; pad > 0; pad-- {
				_ = bw.WriteByte(' ')
			}
		}
		_ = bw.WriteByte('\n')
	}
	return bw.Flush()
}

// tabTable is table's layout by text/tabwriter, for lines of uneven
// length.
func tabTable(w io.Writer, lines [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, l := range lines {
		fmt.Fprintln(tw, strings.Join(l, "\t"))
	}
	return tw.Flush()
}

// safeText escapes control characters (ESC, CR, LF, tab, DEL, C1) and
// invalid UTF-8, so text from another user or a guest cannot move the
// cursor, rewrite earlier lines or split one entry into two.
func safeText(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case unicode.IsControl(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// isTerminal reports whether f is a terminal, to decide on prompts and
// live progress.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(file.Fd()), unix.TCGETS)
	return err == nil
}

// ago formats a past time for tables.
func ago(t time.Time) string {
	// strconv rather than fmt: a list prints 10,000 of these.
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s ago"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h ago"
	}
	return strconv.Itoa(int(d.Hours()/24)) + "d ago"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// safeLines is safeText for multi-line output: line breaks and tabs stay,
// every other control character is escaped. A lone CR before LF (serial
// consoles end lines with CRLF) is dropped rather than shown.
func safeLines(s string) string {
	lines := strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
	for i, l := range lines {
		parts := strings.Split(l, "\t")
		for j, p := range parts {
			parts[j] = safeText(p)
		}
		lines[i] = strings.Join(parts, "\t")
	}
	return strings.Join(lines, "\n")
}

// byteMeter shows a transfer's progress on one terminal line: "<verb>
// <label>: <bytes>", then " / <total> (<share>%)" when the total is known
// (> 0) and the rate once half a second has passed. It redraws at most
// four times a second (and always at the total); off a terminal (live
// false) it prints nothing. The label is escaped: it may name a guest's
// file.
type byteMeter struct {
	w     io.Writer
	live  bool
	verb  string
	label string
	total int64
	start time.Time
	last  time.Time
	drawn bool
}

func newByteMeter(w io.Writer, live bool, verb, label string, total int64) *byteMeter {
	return &byteMeter{w: w, live: live, verb: verb, label: label, total: total, start: time.Now()}
}

// update draws n bytes done, unless the last draw was under 250 ms ago.
func (m *byteMeter) update(n int64) {
	if !m.live {
		return
	}
	now := time.Now()
	if now.Sub(m.last) < 250*time.Millisecond && n != m.total {
		return
	}
	m.last, m.drawn = now, true
	fmt.Fprintf(m.w, "\r\x1b[K%s", m.line(n, now.Sub(m.start)))
}

func (m *byteMeter) line(n int64, elapsed time.Duration) string {
	line := fmt.Sprintf("%s %s: %s", m.verb, safeText(m.label), storage.FormatIEC(n))
	if m.total > 0 {
		line += fmt.Sprintf(" / %s (%d%%)", storage.FormatIEC(m.total), min(100, n*100/m.total))
	}
	if el := elapsed.Seconds(); el > 0.5 {
		line += fmt.Sprintf(" %s/s", storage.FormatIEC(int64(float64(n)/el)))
	}
	return line
}

// stop ends the progress line, if one was drawn.
func (m *byteMeter) stop() {
	if m.drawn {
		fmt.Fprintln(m.w)
		m.drawn = false
	}
}
