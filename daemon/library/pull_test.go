package library_test

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

	"github.com/labvm/labvm/daemon"
	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/test/hostreq"
)

// qcow2Fixture makes a small real qcow2, which the catalogue inspects.
func qcow2Fixture(t *testing.T) []byte {
	t.Helper()
	qemuImg := hostreq.RequireTool(t, "qemu-img", "qemu-utils")
	path := filepath.Join(t.TempDir(), "disk.qcow2")
	if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", path, "32M").CombinedOutput(); err != nil {
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
	td := daemontest.NewWith(t, daemontest.NewFakeHypervisor(), func(cfg *daemon.Config) {
		cfg.PullAllowLoopback = true // the server is httptest's, on loopback
	}, nil)
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
			op, err := td.Client.PullImage(ctx, tc.req)
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
			final, err := td.Client.Wait(ctx, op.ID, nil)
			if tc.wantOpCode != "" {
				if !api.IsCode(err, tc.wantOpCode) || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("pull ended with %v, want %s mentioning %q", err, tc.wantOpCode, tc.wantMsg)
				}
				if _, err := td.Client.Image(ctx, tc.req.Name); !api.IsCode(err, api.CodeNotFound) {
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
			img, err := td.Client.Image(ctx, tc.req.Name)
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
	list, err := td.Client.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("images %+v, want tiny, pulled and pulled-again", list)
	}
	entries, err := os.ReadDir(td.Paths.Images())
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
	if partial, _ := os.ReadDir(filepath.Join(td.Paths.Images(), ".partial")); len(partial) != 0 {
		t.Fatalf("partial area holds %v", partial)
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
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	ctx := context.Background()
	op, err := td.Client.PullImage(ctx, api.PullImageRequest{Name: "local", URL: srv.URL + "/admin?token=s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = td.Client.Wait(ctx, op.ID, nil)
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("pull ended with %v, want a refusal naming loopback", err)
	}
	final, ferr := td.Client.Operation(ctx, op.ID)
	if ferr != nil || len(final.Stages) == 0 {
		t.Fatalf("operation %+v, %v", final, ferr)
	}
	if strings.Contains(err.Error(), "s3cret") || strings.Contains(fmt.Sprintf("%+v", final), "s3cret") {
		t.Fatalf("the token is shown: %v / %+v", err, final)
	}
}
