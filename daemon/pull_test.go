package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

// qcow2Fixture makes a small real qcow2, which the catalogue inspects.
func qcow2Fixture(t *testing.T) []byte {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and prerequisite missing: qemu-img (install qemu-utils)")
		}
		t.Skip("prerequisite missing: qemu-img (install qemu-utils)")
	}
	path := filepath.Join(t.TempDir(), "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", path, "32M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPullImageThroughAPI(t *testing.T) {
	data := qcow2Fixture(t)
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/disk.qcow2":
			http.ServeContent(w, r, "disk.qcow2", time.Time{}, strings.NewReader(string(data)))
		case "/SHA256SUMS":
			w.Write([]byte(digest + "  disk.qcow2\n"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	td := newTestDaemon(t, newFakeHypervisor(), nil)
	td.images.Puller.AllowLoopback = true // the server is httptest's, on loopback
	ctx := context.Background()

	tests := []struct {
		name string
		req  api.PullImageRequest
		// wantCode is the code of the call itself; wantOpCode that of the
		// operation it starts ("" for success).
		wantCode, wantOpCode api.Code
		wantMsg              string
	}{
		{name: "pulled with a checksums file", req: api.PullImageRequest{Name: "pulled", URL: srv.URL + "/disk.qcow2", ChecksumsURL: srv.URL + "/SHA256SUMS"}},
		{name: "same content under another name", req: api.PullImageRequest{Name: "pulled-again", URL: srv.URL + "/disk.qcow2", SHA256: digest}},
		{name: "ftp URL", req: api.PullImageRequest{Name: "x", URL: "ftp://127.0.0.1/disk.qcow2"}, wantCode: api.CodeInvalidArgument, wantMsg: "only http:// and https://"},
		{name: "relative URL", req: api.PullImageRequest{Name: "x", URL: "disk.qcow2"}, wantCode: api.CodeInvalidArgument, wantMsg: "only http:// and https://"},
		{name: "both checksums", req: api.PullImageRequest{Name: "x", URL: srv.URL + "/disk.qcow2", SHA256: digest, ChecksumsURL: srv.URL + "/SHA256SUMS"}, wantCode: api.CodeInvalidArgument, wantMsg: "not both"},
		{name: "malformed sha256", req: api.PullImageRequest{Name: "x", URL: srv.URL + "/disk.qcow2", SHA256: "abc"}, wantCode: api.CodeInvalidArgument, wantMsg: "64 hex"},
		{name: "bad name", req: api.PullImageRequest{Name: "Bad Name", URL: srv.URL + "/disk.qcow2"}, wantCode: api.CodeInvalidArgument, wantMsg: "not allowed"},
		{name: "name taken", req: api.PullImageRequest{Name: "tiny", URL: srv.URL + "/disk.qcow2"}, wantCode: api.CodeAlreadyExists},
		{name: "404", req: api.PullImageRequest{Name: "x", URL: srv.URL + "/gone.qcow2"}, wantOpCode: api.CodeInvalidArgument, wantMsg: "404 Not Found"},
		{name: "checksum mismatch", req: api.PullImageRequest{Name: "x", URL: srv.URL + "/disk.qcow2", SHA256: strings.Repeat("0", 64)}, wantOpCode: api.CodeInvalidArgument, wantMsg: "checksum mismatch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			op, err := td.client.PullImage(ctx, tc.req)
			if tc.wantCode != "" {
				if !api.IsCode(err, tc.wantCode) || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("PullImage error = %v, want %s mentioning %q", err, tc.wantCode, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if op.Kind != api.OpImagePull || op.Target != tc.req.Name {
				t.Fatalf("operation %+v, want an image-pull of %s", op, tc.req.Name)
			}
			final, err := td.client.Wait(ctx, op.ID, nil)
			if tc.wantOpCode != "" {
				if !api.IsCode(err, tc.wantOpCode) || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("pull ended with %v, want %s mentioning %q", err, tc.wantOpCode, tc.wantMsg)
				}
				if _, err := td.client.Image(ctx, tc.req.Name); !api.IsCode(err, api.CodeNotFound) {
					t.Fatalf("failed pull recorded an image (lookup error %v)", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var stages []string
			for _, s := range final.Stages {
				stages = append(stages, s.Name)
			}
			if strings.Join(stages, ",") != "Downloading,Importing,Recording" || !strings.Contains(final.Stages[0].Detail, "(100%)") {
				t.Fatalf("stages %+v, want Downloading (to 100%%), Importing, Recording", final.Stages)
			}
			img, err := td.client.Image(ctx, tc.req.Name)
			if err != nil {
				t.Fatal(err)
			}
			if img.Digest != digest || img.SourceFmt != "qcow2" || img.VirtualSize != 32<<20 {
				t.Fatalf("image %+v, want sha256 %s, qcow2, 32 MiB", img, digest)
			}
		})
	}

	// Two names, one stored file; nothing else in the catalogue but the
	// test's seed base and the (empty) partial area.
	list, err := td.client.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("images %+v, want tiny, pulled and pulled-again", list)
	}
	entries, err := os.ReadDir(td.cfg.imagesDir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{".partial", "base.qcow2", digest + ".qcow2"}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("images dir holds %v, want %v", names, want)
	}
	if partial, _ := os.ReadDir(filepath.Join(td.cfg.imagesDir(), ".partial")); len(partial) != 0 {
		t.Fatalf("partial area holds %v", partial)
	}
}

func TestFormatPull(t *testing.T) {
	tests := []struct {
		done, total int64
		rate        float64
		want        string
	}{
		{done: 0, total: 512 << 20, want: "0 B / 512.0 MiB (0%)"},
		{done: 129394278, total: 512 << 20, rate: 45.6 * (1 << 20), want: "123.4 MiB / 512.0 MiB (24%) 45.6 MiB/s"},
		{done: 3 << 30, total: -1, rate: 1000, want: "3.0 GiB 1000 B/s"},
		{done: 1536, total: 1536, want: "1.5 KiB / 1.5 KiB (100%)"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := formatPull(tc.done, tc.total, tc.rate); got != tc.want {
				t.Fatalf("formatPull(%d, %d, %v) = %q, want %q", tc.done, tc.total, tc.rate, got, tc.want)
			}
		})
	}
}

// TestPullMeterThrottles checks that progress reaches the operation a few
// times a second at most, but always at the end.
func TestPullMeterThrottles(t *testing.T) {
	td := newTestDaemon(t, newFakeHypervisor(), nil)
	op, err := td.ops.begin(api.OpImagePull, "x", "", Caller{Name: "root"})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Finish(nil)
	op.Stage("Downloading", "")
	clock := time.Unix(0, 0)
	m := &pullMeter{op: op, now: func() time.Time { return clock }}
	detail := func() string { s := op.Snapshot().Stages; return s[len(s)-1].Detail }

	steps := []struct {
		after  time.Duration
		done   int64
		detail string
	}{
		{done: 1 << 20, detail: "1.0 MiB / 4.0 MiB (25%)"},
		{after: 100 * time.Millisecond, done: 2 << 20, detail: "1.0 MiB / 4.0 MiB (25%)"},
		{after: 200 * time.Millisecond, done: 3 << 20, detail: "3.0 MiB / 4.0 MiB (75%) 6.7 MiB/s"},
		{after: time.Millisecond, done: 4 << 20, detail: "4.0 MiB / 4.0 MiB (100%) 10.0 MiB/s"},
	}
	for _, s := range steps {
		clock = clock.Add(s.after)
		m.update(s.done, 4<<20)
		if got := detail(); got != s.detail {
			t.Fatalf("after %d bytes detail = %q, want %q", s.done, got, s.detail)
		}
	}
}

// TestPullNeverReachesTheHost: a daemon as configured for production
// refuses a pull from its own host, and the URL's token appears neither
// in the operation nor in its error.
func TestPullNeverReachesTheHost(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the host's service was reached: %s", r.URL)
	}))
	defer srv.Close()
	td := newTestDaemon(t, newFakeHypervisor(), nil)
	ctx := context.Background()
	op, err := td.client.PullImage(ctx, api.PullImageRequest{Name: "local", URL: srv.URL + "/admin?token=s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = td.client.Wait(ctx, op.ID, nil)
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("pull ended with %v, want a refusal naming loopback", err)
	}
	final, ferr := td.client.Operation(ctx, op.ID)
	if ferr != nil || len(final.Stages) == 0 {
		t.Fatalf("operation %+v, %v", final, ferr)
	}
	if strings.Contains(err.Error(), "s3cret") || strings.Contains(fmt.Sprintf("%+v", final), "s3cret") {
		t.Fatalf("the token is shown: %v / %+v", err, final)
	}
}
