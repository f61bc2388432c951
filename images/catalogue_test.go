package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/test/hostreq"
)

type fixtures struct {
	qcow2, raw, text, empty, vmdk, backed, dir string
}

// newFixtures builds small inputs of every kind Import must tell apart.
func newFixtures(t *testing.T) fixtures {
	t.Helper()
	hostreq.RequireTool(t, "qemu-img", "qemu-utils")
	hostreq.RequireTool(t, "qemu-io", "qemu-utils")
	d := t.TempDir()
	f := fixtures{
		qcow2:  filepath.Join(d, "disk.qcow2"),
		raw:    filepath.Join(d, "disk.img"),
		text:   filepath.Join(d, "notes.txt"),
		empty:  filepath.Join(d, "empty.img"),
		vmdk:   filepath.Join(d, "disk.vmdk"),
		backed: filepath.Join(d, "overlay.qcow2"),
		dir:    filepath.Join(d, "adir"),
	}
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", f.qcow2, "64M")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x42 1M 512k", f.qcow2)
	rawData := bytes.Repeat([]byte("raw disk sector!"), 2<<20/16)
	writeFile(t, f.raw, rawData)
	writeFile(t, f.text, []byte("this is not a disk image\n"))
	writeFile(t, f.empty, nil)
	run(t, "qemu-img", "create", "-q", "-f", "vmdk", f.vmdk, "16M")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", f.qcow2, "-F", "qcow2", f.backed)
	if err := os.Mkdir(f.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// dirEntries lists Dir, treating a directory that was never created as empty.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// importFile imports the file at path as a client would stream it.
func importFile(ctx context.Context, cat *Catalogue, path string, opts ImportOptions) (Imported, error) {
	f, err := os.Open(path)
	if err != nil {
		return Imported{}, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && opts.Size == 0 {
		opts.Size = st.Size()
	}
	return cat.Import(ctx, f, opts)
}

func TestImport(t *testing.T) {
	f := newFixtures(t)
	tests := []struct {
		name        string
		source      string
		checksum    func(string) string
		wantFormat  string
		wantVirtual int64
	}{
		{name: "qcow2 copied", source: f.qcow2, wantFormat: "qcow2", wantVirtual: 64 << 20},
		{name: "qcow2 with upper-case checksum", source: f.qcow2, checksum: strings.ToUpper, wantFormat: "qcow2", wantVirtual: 64 << 20},
		{name: "raw converted", source: f.raw, checksum: func(s string) string { return s }, wantFormat: "raw", wantVirtual: 2 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			cat := New(filepath.Join(t.TempDir(), "bases"))
			sourceDigest := sha256File(t, tc.source)
			var opts ImportOptions
			if tc.checksum != nil {
				opts.SHA256 = tc.checksum(sourceDigest)
			}
			var progress []int64
			opts.Progress = func(n int64) { progress = append(progress, n) }
			imp, err := importFile(ctx, cat, tc.source, opts)
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(imp.Path)
			if err != nil {
				t.Fatal(err)
			}
			// The name is the digest of what is stored, whatever came in.
			digest := sha256File(t, imp.Path)
			want := Imported{Digest: digest, SourceDigest: sourceDigest, Path: filepath.Join(cat.Dir, digest+".qcow2"), SourceFormat: tc.wantFormat, VirtualSize: tc.wantVirtual, FileSize: st.Size()}
			if imp != want {
				t.Fatalf("Import = %+v, want %+v", imp, want)
			}
			if tc.wantFormat == "qcow2" && digest != sourceDigest {
				t.Fatalf("qcow2 stored as %s, want its own digest %s", digest, sourceDigest)
			}
			if srcSt, _ := os.Stat(tc.source); len(progress) == 0 || progress[len(progress)-1] != srcSt.Size() {
				t.Fatalf("progress %v does not end at the source size %d", progress, srcSt.Size())
			}
			if st.Mode().Perm() != 0o444 {
				t.Fatalf("base mode %v, want 0444", st.Mode().Perm())
			}
			if dst, _ := os.Stat(cat.Dir); dst.Mode().Perm() != 0o711 {
				t.Fatalf("catalogue dir mode %v, want 0711 (QEMU passes, nobody lists)", dst.Mode().Perm())
			}
			info, err := storage.Inspect(ctx, imp.Path)
			if err != nil {
				t.Fatal(err)
			}
			if info.Format != "qcow2" || info.BackingFile != "" {
				t.Fatalf("stored base is %+v, want standalone qcow2", info)
			}
			run(t, "qemu-img", "compare", "-f", tc.wantFormat, "-F", "qcow2", tc.source, imp.Path)
			if names := dirEntries(t, cat.Dir); len(names) != 1 {
				t.Fatalf("catalogue holds %v, want only the base", names)
			}
		})
	}
}

// failingReader yields data, then fails as a dropped connection does.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestImportRefuses(t *testing.T) {
	f := newFixtures(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	wrong := strings.Repeat("0", 64)
	qcow2 := readFile(t, f.qcow2)
	half := qcow2[:len(qcow2)/2]

	tests := []struct {
		name    string
		ctx     context.Context
		src     io.Reader
		opts    ImportOptions
		wantIs  error
		wantMsg string
	}{
		{name: "text file", src: bytes.NewReader(readFile(t, f.text)), wantIs: ErrUnsupportedFormat, wantMsg: "accepted: qcow2"},
		{name: "empty file", src: bytes.NewReader(nil), wantIs: ErrUnsupportedFormat, wantMsg: "not a disk image"},
		{name: "vmdk", src: bytes.NewReader(readFile(t, f.vmdk)), wantIs: ErrUnsupportedFormat, wantMsg: "vmdk"},
		{name: "qcow2 with backing file", src: bytes.NewReader(readFile(t, f.backed)), wantIs: ErrUnsupportedFormat, wantMsg: "backing file"},
		{name: "wrong checksum", src: bytes.NewReader(qcow2), opts: ImportOptions{SHA256: wrong}, wantIs: ErrChecksumMismatch, wantMsg: wrong},
		{name: "malformed checksum", src: bytes.NewReader(qcow2), opts: ImportOptions{SHA256: "abc"}, wantIs: ErrInvalidDigest},
		{name: "upload cut short", src: &failingReader{data: half, err: io.ErrUnexpectedEOF}, opts: ImportOptions{Size: int64(len(qcow2))}, wantIs: ErrIncomplete, wantMsg: "arrived"},
		{name: "fewer bytes than announced", src: bytes.NewReader(half), opts: ImportOptions{Size: int64(len(qcow2))}, wantIs: ErrIncomplete},
		{name: "more bytes than announced", src: bytes.NewReader(qcow2), opts: ImportOptions{Size: int64(len(half))}, wantIs: ErrIncomplete},
		{name: "cancelled", ctx: cancelled, src: bytes.NewReader(qcow2), wantIs: context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			cat := New(filepath.Join(t.TempDir(), "bases"))
			_, err := cat.Import(ctx, tc.src, tc.opts)
			if err == nil {
				t.Fatal("Import succeeded, want error")
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Fatalf("Import error %v does not wrap %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Import error %q does not mention %q", err, tc.wantMsg)
			}
			if names := dirEntries(t, cat.Dir); len(names) != 0 {
				t.Fatalf("failed import left %v in the catalogue", names)
			}
		})
	}
	t.Run("checksum mismatch names both digests", func(t *testing.T) {
		_, err := importFile(context.Background(), New(t.TempDir()), f.qcow2, ImportOptions{SHA256: wrong})
		if got := sha256File(t, f.qcow2); err == nil || !strings.Contains(err.Error(), got) {
			t.Fatalf("Import error %v does not name the actual digest %s", err, got)
		}
	})
}

// TestImportCancelledWhileStoring cancels after the bytes are in, where
// temporary files already exist in Dir.
func TestImportCancelledWhileStoring(t *testing.T) {
	f := newFixtures(t)
	for _, source := range []string{f.qcow2, f.raw} {
		t.Run(filepath.Base(source), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cat := New(t.TempDir())
			var size int64
			if st, err := os.Stat(source); err == nil {
				size = st.Size()
			}
			_, err := importFile(ctx, cat, source, ImportOptions{Progress: func(n int64) {
				if n == size {
					cancel()
				}
			}})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Import error = %v, want context.Canceled", err)
			}
			if names := dirEntries(t, cat.Dir); len(names) != 0 {
				t.Fatalf("cancelled import left %v behind", names)
			}
		})
	}
}

func TestImportDedup(t *testing.T) {
	f := newFixtures(t)
	ctx := context.Background()
	cat := New(t.TempDir())
	first, err := importFile(ctx, cat, f.qcow2, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(first.Path)
	second, err := importFile(ctx, cat, f.qcow2, ImportOptions{SHA256: first.Digest})
	if err != nil {
		t.Fatal(err)
	}
	if second != first {
		t.Fatalf("second import = %+v, want %+v", second, first)
	}
	after, _ := os.Stat(first.Path)
	if !os.SameFile(before, after) {
		t.Fatal("second import replaced the stored base instead of reusing it")
	}
	raw, err := importFile(ctx, cat, f.raw, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := importFile(ctx, cat, f.raw, ImportOptions{}); err != nil || again != raw {
		t.Fatalf("raw imported again = %+v, %v; want %+v", again, err, raw)
	}
	if names := dirEntries(t, cat.Dir); len(names) != 2 {
		t.Fatalf("catalogue holds %v, want two bases", names)
	}
}

// TestImportDedupPoisoned: a base whose content is not what its name says
// (here: raw source bytes stored under the raw file's digest, as older
// labvm named raw imports, or a corrupted file) is never reused; the
// import stores the verified bytes in its place.
func TestImportDedupPoisoned(t *testing.T) {
	f := newFixtures(t)
	ctx := context.Background()
	tests := []struct {
		name    string
		planted func(t *testing.T, path string)
	}{
		{name: "other content", planted: func(t *testing.T, path string) { writeFile(t, path, readFile(t, f.raw)) }},
		{name: "truncated", planted: func(t *testing.T, path string) { writeFile(t, path, readFile(t, f.qcow2)[:4096]) }},
		{name: "symlink", planted: func(t *testing.T, path string) {
			if err := os.Symlink(f.backed, path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cat := New(t.TempDir())
			digest := sha256File(t, f.qcow2)
			tc.planted(t, cat.Path(digest))
			imp, err := importFile(ctx, cat, f.qcow2, ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if imp.Digest != digest || imp.Path != cat.Path(digest) {
				t.Fatalf("Import = %+v, want digest %s", imp, digest)
			}
			st, err := os.Lstat(imp.Path)
			if err != nil || !st.Mode().IsRegular() {
				t.Fatalf("stored base is %v, %v; want a regular file", st, err)
			}
			if got := sha256File(t, imp.Path); got != digest {
				t.Fatalf("stored base has sha256 %s, its name says %s", got, digest)
			}
		})
	}
}

func TestRemove(t *testing.T) {
	f := newFixtures(t)
	cat := New(t.TempDir())
	imp, err := importFile(context.Background(), cat, f.raw, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(filepath.Dir(cat.Dir), "victim.qcow2")
	writeFile(t, outside, []byte("not yours"))

	tests := []struct {
		name   string
		digest string
		wantIs error
	}{
		{name: "upper-case digest", digest: strings.ToUpper(imp.Digest)},
		{name: "already gone", digest: imp.Digest},
		{name: "path traversal", digest: "../victim", wantIs: ErrInvalidDigest},
		{name: "empty", digest: "", wantIs: ErrInvalidDigest},
		{name: "short", digest: imp.Digest[:63], wantIs: ErrInvalidDigest},
		{name: "not hex", digest: strings.Repeat("g", 64), wantIs: ErrInvalidDigest},
		{name: "slash padded", digest: "../" + imp.Digest[3:], wantIs: ErrInvalidDigest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := cat.Remove(tc.digest)
			if !errors.Is(err, tc.wantIs) {
				t.Fatalf("Remove(%q) = %v, want %v", tc.digest, err, tc.wantIs)
			}
			if tc.wantIs != nil && cat.Path(tc.digest) != "" {
				t.Fatalf("Path(%q) = %q, want empty for an invalid digest", tc.digest, cat.Path(tc.digest))
			}
		})
	}
	if _, err := os.Stat(imp.Path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("base still present after Remove: %v", err)
	}
	if _, err := os.Stat(outside); err != nil {
		t.Fatalf("file outside the catalogue was touched: %v", err)
	}
}
