package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
)

// brokenReader yields n bytes of data, then fails like a client that died.
type brokenReader struct {
	data []byte
	n    int
}

func (r *brokenReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("client gave up")
	}
	m := copy(p[:min(len(p), r.n)], r.data)
	r.data, r.n = r.data[m:], r.n-m
	return m, nil
}

// TestImageImportStreams: the CLI reads the image with the caller's rights
// and streams it; the daemon opens no path for anyone. An owner cannot
// import a file they cannot read (inside a root-only directory, or behind a
// symlink); a wrong checksum, a file that is not an image and an upload cut
// short leave nothing behind; the old import by path is gone.
func TestImageImportStreams(t *testing.T) {
	image := requireHost(t)
	binariesReadableByAll(t)
	p := "lvi" + randHex(3)
	sock := p + "sock"
	testGroup(t, sock)
	ivy := testUser(t, p+"-ivy", sock)
	nemo := testUser(t, p+"-nemo", sock) // no role
	d := startDaemon(t, "--socket-group", sock)
	d.must("role", "assign", ivy.name, "owner")
	imagesDir := filepath.Join(d.dataDir, "images")
	tiny, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}

	// Root's secrets: a readable file in a root-only directory, and a
	// root-only file. Both are valid images, so only rights stop them.
	secretDir := t.TempDir()
	if err := os.Chmod(secretDir, 0o700); err != nil {
		t.Fatal(err)
	}
	inLocked := filepath.Join(secretDir, "readable.qcow2")
	rootOnly := filepath.Join(secretDir, "root-only.qcow2")
	if err := os.WriteFile(inLocked, tiny, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rootOnly, tiny, 0o600); err != nil {
		t.Fatal(err)
	}
	// Ivy's own directory, with her copy of the image and her symlinks.
	ivyDir, err := os.MkdirTemp("/var/tmp", "labvm-e2e-ivy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(ivyDir) })
	if err := os.Chmod(ivyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(ivyDir, ivy.uid, ivy.gid); err != nil {
		t.Fatal(err)
	}
	own := filepath.Join(ivyDir, "mine.qcow2")
	if err := os.WriteFile(own, tiny, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(own, ivy.uid, ivy.gid); err != nil {
		t.Fatal(err)
	}
	linkToRootOnly := filepath.Join(ivyDir, "link-root-only.qcow2")
	linkIntoLocked := filepath.Join(ivyDir, "link-locked.qcow2")
	if err := os.Symlink(rootOnly, linkToRootOnly); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(inLocked, linkIntoLocked); err != nil {
		t.Fatal(err)
	}

	bases := func(t *testing.T) []string {
		t.Helper()
		entries, err := os.ReadDir(imagesDir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	// nothingLeft waits for a failed import's cleanup (it runs in the
	// operation, after the answer) and checks that only want remains.
	nothingLeft := func(t *testing.T, what string, want []string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for strings.Join(bases(t), " ") != strings.Join(want, " ") && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if got := bases(t); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s left images/ holding %v, want %v", what, got, want)
		}
	}

	t.Log("an owner imports her own file: the CLI streams it as her")
	if r := d.as(ivy, "image", "import", "ivys", own, "--sha256", readSHA256(t, image)); r.code != 0 {
		t.Fatalf("import of her own file: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	before := bases(t)
	if len(before) != 1 {
		t.Fatalf("images/ after one import: %v", before)
	}

	d.chapter(t, "a caller without images/write is refused before any byte is sent", func(t *testing.T) {
		huge := filepath.Join(ivyDir, "huge.img")
		if f, err := os.Create(huge); err != nil {
			t.Fatal(err)
		} else {
			if err := f.Truncate(64 << 30); err != nil { // sparse: costs nothing on disk, minutes to send
				t.Fatal(err)
			}
			f.Close()
		}
		if err := os.Chmod(huge, 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if r := d.as(nemo, "image", "import", "huge", huge); r.code == 0 || !strings.Contains(r.stderr, "images/write") {
			t.Fatalf("import without the right: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("the refusal took %v: the upload was sent before the answer", took)
		}
		nothingLeft(t, "a refused upload", before)
	})

	d.chapter(t, "files she cannot read stay unread, whatever the daemon could read", func(t *testing.T) {
		for _, tc := range []struct{ name, path string }{
			{"a 0644 file in a root-only directory", inLocked},
			{"a symlink to a root-only file", linkToRootOnly},
			{"a symlink into a root-only directory", linkIntoLocked},
		} {
			d.chapter(t, tc.name, func(t *testing.T) {
				r := d.as(ivy, "image", "import", "stolen", tc.path)
				if r.code == 0 || !strings.Contains(r.stderr, "cannot read") {
					t.Fatalf("import of %s: exit %d, want 'cannot read'\n%s%s", tc.path, r.code, r.stdout, r.stderr)
				}
				nothingLeft(t, tc.name, before)
			})
		}
		if out := d.must("image", "list"); strings.Contains(out, "stolen") {
			t.Fatalf("an image 'stolen' exists:\n%s", out)
		}
	})

	d.chapter(t, "a wrong checksum and a file that is not an image leave nothing behind", func(t *testing.T) {
		notImage := filepath.Join(t.TempDir(), "notes.txt")
		if err := os.WriteFile(notImage, append(bytes.Repeat([]byte("not a disk image\n"), 4096), '!'), 0o644); err != nil { // not whole sectors
			t.Fatal(err)
		}
		d.mustFail("sha256", "image", "import", "wrongsum", image, "--sha256", strings.Repeat("0", 64))
		nothingLeft(t, "a checksum mismatch", before)
		d.mustFail("qcow2", "image", "import", "notimage", notImage)
		nothingLeft(t, "a non-image", before)
	})

	d.chapter(t, "an upload cut short leaves nothing behind and records no image", func(t *testing.T) {
		c := client.New(d.socket)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.ImportImage(ctx, api.ImportImageRequest{Name: "cut"}, &brokenReader{data: tiny, n: len(tiny) / 2}, int64(len(tiny))); err == nil {
			// The daemon may answer before the client notices; the operation
			// must fail then.
			t.Log("upload answered; the operation must fail")
		}
		nothingLeft(t, "an interrupted upload", before)
		if _, err := c.Image(ctx, "cut"); !api.IsCode(err, api.CodeNotFound) {
			t.Fatalf("image after an interrupted upload: %v", err)
		}
	})

	d.chapter(t, "the old import by path is refused: the daemon reads no path", func(t *testing.T) {
		hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
		}}}
		resp, err := hc.Post("http://labvmd/v1/images", "application/json", strings.NewReader(`{"name":"bypath","path":"`+image+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "does not read files by path") {
			t.Fatalf("import by path: %s %s", resp.Status, body)
		}
		nothingLeft(t, "an import by path", before)
	})

}
