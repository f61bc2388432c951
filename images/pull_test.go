package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// handler serves the nth request (1-based) to the test server.
type handler func(w http.ResponseWriter, r *http.Request, n int)

// origin is a local HTTP server that records the Range header of every
// request, so tests can tell fresh downloads from resumes.
type origin struct {
	*httptest.Server
	mu     sync.Mutex
	ranges []string
}

func newOrigin(t *testing.T, h handler) *origin {
	t.Helper()
	o := &origin{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.ranges = append(o.ranges, r.Header.Get("Range"))
		n := len(o.ranges)
		o.mu.Unlock()
		h(w, r, n)
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *origin) requests() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.ranges...)
}

// content serves data with Range and If-Range support, as a well-behaved
// mirror does.
func content(data []byte, etag string) handler {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("ETag", etag)
		http.ServeContent(w, r, "image", time.Time{}, bytes.NewReader(data))
	}
}

// ignoreRange always sends the whole file, as servers without range
// support do.
func ignoreRange(data []byte, etag string) handler {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("ETag", etag)
		w.Write(data)
	}
}

func status(code int) handler {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		http.Error(w, http.StatusText(code), code)
	}
}

// dropHalf promises all of data, sends half, and closes the connection.
func dropHalf(data []byte, etag string) handler {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		w.Write(data[:len(data)/2])
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		if conn, _, err := rc.Hijack(); err == nil {
			conn.Close()
		}
	}
}

// firstThen serves the first request with first and the rest with then.
func firstThen(first, then handler) handler {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			first(w, r, n)
			return
		}
		then(w, r, n)
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newPullCatalogue retries fast so failure cases finish quickly.
func newPullCatalogue(t *testing.T) *Catalogue {
	cat := New(filepath.Join(t.TempDir(), "bases"))
	cat.Puller = Puller{Attempts: 3, RetryWait: time.Millisecond, StallTimeout: 5 * time.Second, AllowLoopback: true}
	return cat
}

// bases lists Dir without the partial area; partials lists that area.
func bases(t *testing.T, cat *Catalogue) []string {
	t.Helper()
	var out []string
	for _, n := range dirEntries(t, cat.Dir) {
		if n != partialDir {
			out = append(out, n)
		}
	}
	return out
}

func partials(t *testing.T, cat *Catalogue) []string {
	return dirEntries(t, filepath.Join(cat.Dir, partialDir))
}

func TestPull(t *testing.T) {
	f := newFixtures(t)
	qcow2, raw := readFile(t, f.qcow2), readFile(t, f.raw)
	other := append(bytes.Clone(qcow2[:len(qcow2)-1]), qcow2[len(qcow2)-1]^1)
	wrong := strings.Repeat("0", 64)
	half := func(b []byte) string { return fmt.Sprintf("bytes=%d-", len(b)/2) }

	tests := []struct {
		name    string
		serve   handler
		sha256  func(url string) string // nil: no checksum
		url     func(url string) string // nil: the server's /image
		wantSrc []byte                  // on success, the bytes stored
		wantFmt string
		wantIs  error
		wantMsg string
		// wantRanges is the Range header of each request ("" for none).
		wantRanges []string
		// keepsPartial: a failure a later pull can resume.
		keepsPartial bool
	}{
		{name: "qcow2", serve: content(qcow2, `"a"`), wantSrc: qcow2, wantFmt: "qcow2", wantRanges: []string{""}},
		{name: "raw converted, checksum given", serve: content(raw, `"r"`), sha256: func(string) string { return strings.ToUpper(digestOf(raw)) },
			wantSrc: raw, wantFmt: "raw", wantRanges: []string{""}},
		{name: "resumes after the connection drops", serve: firstThen(dropHalf(qcow2, `"a"`), content(qcow2, `"a"`)),
			wantSrc: qcow2, wantFmt: "qcow2", wantRanges: []string{"", half(qcow2)}},
		{name: "server ignoring Range restarts from zero", serve: firstThen(dropHalf(qcow2, `"a"`), ignoreRange(qcow2, `"a"`)),
			wantSrc: qcow2, wantFmt: "qcow2", wantRanges: []string{"", half(qcow2)}},
		{name: "new version upstream is not spliced", serve: firstThen(dropHalf(qcow2, `"v1"`), content(other, `"v2"`)),
			sha256: func(string) string { return digestOf(other) }, wantSrc: other, wantFmt: "qcow2", wantRanges: []string{"", half(qcow2)}},
		{name: "404", serve: status(http.StatusNotFound), wantIs: ErrRemoteRefused, wantMsg: "server refused the download: HTTP 404 Not Found", wantRanges: []string{""}},
		{name: "500 retried then fails", serve: status(http.StatusInternalServerError), wantIs: ErrDownloadFailed,
			wantMsg: "after 3 attempts: HTTP 500 Internal Server Error", wantRanges: []string{"", "", ""}, keepsPartial: true},
		{name: "drops every time", serve: dropHalf(qcow2, `"a"`), wantIs: ErrDownloadFailed, wantMsg: "connection lost after",
			wantRanges: []string{"", half(qcow2), half(qcow2)}, keepsPartial: true},
		{name: "checksum mismatch", serve: content(qcow2, `"a"`), sha256: func(string) string { return wrong },
			wantIs: ErrChecksumMismatch, wantMsg: wrong, wantRanges: []string{""}},
		{name: "not a disk image", serve: content([]byte("<html>moved</html>\n"), `"h"`), wantIs: ErrUnsupportedFormat, wantRanges: []string{""}},
		{name: "ftp URL", url: func(string) string { return "ftp://127.0.0.1/image" }, wantIs: ErrInvalidURL, wantMsg: "only http:// and https://"},
		{name: "file URL", url: func(string) string { return "file:///etc/shadow" }, wantIs: ErrInvalidURL},
		{name: "malformed checksum", sha256: func(string) string { return "abc" }, wantIs: ErrInvalidDigest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			serve := tc.serve
			if serve == nil {
				serve = status(http.StatusTeapot)
			}
			o := newOrigin(t, serve)
			cat := newPullCatalogue(t)
			opts := PullOptions{URL: o.URL + "/image"}
			if tc.url != nil {
				opts.URL = tc.url(o.URL)
			}
			if tc.sha256 != nil {
				opts.SHA256 = tc.sha256(o.URL)
			}
			imp, err := cat.Pull(ctx, opts)

			if got := o.requests(); fmt.Sprint(got) != fmt.Sprint(tc.wantRanges) {
				t.Errorf("requests had Range %q, want %q", got, tc.wantRanges)
			}
			if tc.wantSrc != nil {
				if err != nil {
					t.Fatal(err)
				}
				if imp.SourceDigest != digestOf(tc.wantSrc) || imp.SourceFormat != tc.wantFmt || imp.Path != cat.Path(imp.Digest) {
					t.Fatalf("Pull = %+v, want digest %s from %s", imp, digestOf(tc.wantSrc), tc.wantFmt)
				}
				if names := bases(t, cat); len(names) != 1 {
					t.Fatalf("catalogue holds %v, want only the base", names)
				}
				if names := partials(t, cat); len(names) != 0 {
					t.Fatalf("partial area holds %v after success", names)
				}
				return
			}
			if err == nil {
				t.Fatalf("Pull = %+v, want an error", imp)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Fatalf("Pull error %v does not wrap %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Pull error %q does not mention %q", err, tc.wantMsg)
			}
			if names := bases(t, cat); len(names) != 0 {
				t.Fatalf("failed pull left %v in the catalogue", names)
			}
			if names := partials(t, cat); tc.keepsPartial != (len(names) > 0) {
				t.Fatalf("partial area holds %v; want kept: %v", names, tc.keepsPartial)
			}
		})
	}
}

func TestPullChecksumsFile(t *testing.T) {
	f := newFixtures(t)
	qcow2 := readFile(t, f.qcow2)
	sum := digestOf(qcow2)
	tests := []struct {
		name   string
		sums   handler
		wantIs error
		// wantFetches counts image requests: a checksum that cannot be
		// found must cost no download.
		wantFetches int32
	}{
		{name: "text mode", sums: content([]byte("# list\n"+strings.Repeat("1", 64)+"  other.img\n"+sum+"  disk.qcow2\n"), `"s"`), wantFetches: 1},
		{name: "binary mode, upper case", sums: content([]byte(strings.ToUpper(sum)+" *disk.qcow2\n"), `"s"`), wantFetches: 1},
		{name: "listed with a wrong digest", sums: content([]byte(strings.Repeat("0", 64)+"  disk.qcow2\n"), `"s"`), wantIs: ErrChecksumMismatch, wantFetches: 1},
		{name: "not listed", sums: content([]byte(sum+"  disk.qcow2.xz\n"), `"s"`), wantIs: ErrChecksumNotListed},
		{name: "checksums file missing", sums: status(http.StatusNotFound), wantIs: ErrRemoteRefused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var fetches atomic.Int32
			o := newOrigin(t, func(w http.ResponseWriter, r *http.Request, n int) {
				if r.URL.Path == "/SHA256SUMS" {
					tc.sums(w, r, n)
					return
				}
				fetches.Add(1)
				content(qcow2, `"a"`)(w, r, n)
			})
			cat := newPullCatalogue(t)
			imp, err := cat.Pull(context.Background(), PullOptions{URL: o.URL + "/dir/disk.qcow2", ChecksumsURL: o.URL + "/SHA256SUMS"})
			if !errors.Is(err, tc.wantIs) || (tc.wantIs == nil) != (err == nil) {
				t.Fatalf("Pull error = %v, want %v", err, tc.wantIs)
			}
			if err == nil && imp.SourceDigest != sum {
				t.Fatalf("Pull digest %s, want %s", imp.SourceDigest, sum)
			}
			if got := fetches.Load(); got != tc.wantFetches {
				t.Fatalf("image fetched %d times, want %d", got, tc.wantFetches)
			}
			if names := bases(t, cat); (err == nil) != (len(names) == 1) {
				t.Fatalf("catalogue holds %v after error %v", names, err)
			}
		})
	}
}

func TestFindChecksum(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	tests := []struct {
		name, sums, file, want string
	}{
		{"text mode", sum + "  a.img\n", "a.img", sum},
		{"binary mode", sum + " *a.img\n", "a.img", sum},
		{"dot slash", sum + "  ./a.img\n", "a.img", sum},
		{"BSD style", "SHA256 (a.img) = " + sum + "\n", "a.img", sum},
		{"CRLF", sum + "  a.img\r\n", "a.img", sum},
		{"prefix of another name", sum + "  a.img.xz\n", "a.img", ""},
		{"sha512 line", strings.Repeat("ab", 64) + "  a.img\n", "a.img", ""},
		{"name with spaces", sum + "  my disk.img\n", "my disk.img", sum},
		{"empty", "", "a.img", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := findChecksum([]byte(tc.sums), tc.file)
			if got != tc.want || ok != (tc.want != "") {
				t.Fatalf("findChecksum = %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in          string
		start, size int64
		ok          bool
	}{
		{"bytes 100-199/200", 100, 200, true},
		{"bytes 0-9/*", 0, -1, true},
		{"bytes */500", -1, 500, true},
		{"bytes 5/10", 0, 0, false},
		{"items 0-9/10", 0, 0, false},
		{"bytes x-9/10", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			start, size, ok := parseContentRange(tc.in)
			if start != tc.start || size != tc.size || ok != tc.ok {
				t.Fatalf("parseContentRange(%q) = %d, %d, %v; want %d, %d, %v", tc.in, start, size, ok, tc.start, tc.size, tc.ok)
			}
		})
	}
}
