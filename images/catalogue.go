package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/labvm/labvm/storage"
)

var (
	// ErrChecksumMismatch means the source is not the file the caller
	// expected; nothing was stored.
	ErrChecksumMismatch = errors.New("checksum mismatch")
	// ErrUnsupportedFormat means the source is not a standalone qcow2 or a
	// plausible raw disk image.
	ErrUnsupportedFormat = errors.New("unsupported image format")
	// ErrInvalidDigest means a digest is not 64 hexadecimal characters.
	ErrInvalidDigest = errors.New("invalid image digest")
	// ErrIncomplete means the source ended before (or ran past) the size
	// it announced, as when an upload is interrupted; nothing was stored.
	ErrIncomplete = errors.New("image incomplete")
)

const (
	// Bases are shared by every instance's overlay and read by QEMU as
	// libvirt-qemu, so they are world-readable and nobody's to write. The
	// directory lets QEMU through by name but lists for nobody.
	baseMode = 0o444
	dirMode  = storage.PrivateDirMode
	baseExt  = ".qcow2"
	tempGlob = ".import-*"
	// copyChunk bounds how long a copy or hash runs before noticing that
	// its context was cancelled.
	copyChunk = 1 << 20
)

// Catalogue stores base images as Dir/<sha256hex>.qcow2.
type Catalogue struct {
	Dir string
	// Puller fetches images for Pull and shares concurrent downloads of
	// one URL, so it lives as long as the catalogue (see pull.go).
	Puller Puller
}

// New returns a catalogue rooted at dir. The directory is created on first
// import.
func New(dir string) *Catalogue {
	return &Catalogue{Dir: dir}
}

// ImportOptions describes one image to bring into the catalogue.
type ImportOptions struct {
	// SHA256 is the expected hex digest of the bytes read; empty skips the
	// check. Case is ignored, as published checksum files vary.
	SHA256 string
	// Size is how many bytes the reader yields, or 0 when unknown. A
	// reader that ends early or runs on is refused (ErrIncomplete): an
	// upload cut short must never become a base.
	Size int64
	// Progress, if set, is called with the bytes read so far as they
	// arrive, from Import's goroutine.
	Progress func(read int64)
}

// Imported describes a stored base image.
type Imported struct {
	// Digest is the sha256 of the stored qcow2 and names its file: a name
	// in the catalogue always stands for exactly those bytes.
	Digest string
	// SourceDigest is the sha256 of the bytes imported, which is what users
	// compare against a published checksum. It equals Digest for a qcow2
	// source; a raw source is converted, so its stored digest differs.
	SourceDigest string
	Path         string
	SourceFormat string
	VirtualSize  int64
	// FileSize is the size of the stored file on the host.
	FileSize int64
}

// Path returns where the base with the given digest is stored, or "" if the
// digest is not 64 hex characters, so a crafted digest can never name a file
// outside Dir.
func (c *Catalogue) Path(digest string) string {
	d, err := normaliseDigest(digest)
	if err != nil {
		return ""
	}
	return filepath.Join(c.Dir, d+baseExt)
}

// Remove deletes the base with the given digest. Removing an absent base
// succeeds, so a retried delete is harmless.
func (c *Catalogue) Remove(digest string) error {
	d, err := normaliseDigest(digest)
	if err != nil {
		return err
	}
	path := filepath.Join(c.Dir, d+baseExt)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove base image %s: %w", path, err)
	}
	return nil
}

// Import reads an image from src into a private temporary file in Dir,
// hashing as it goes, and only then looks at it: the checksum is that of
// the bytes received, and the format is read from the daemon's own copy,
// which nobody else can change. A qcow2 is kept as is, a raw image is
// converted; the result is stored read-only under the sha256 of its own
// bytes. Importing content already stored re-verifies the stored file and
// returns it. On any failure, including cancellation and a short read,
// Dir is left as it was.
func (c *Catalogue) Import(ctx context.Context, src io.Reader, opts ImportOptions) (Imported, error) {
	imp, err := c.importFrom(ctx, src, opts)
	if err != nil {
		return Imported{}, fmt.Errorf("import image: %w", err)
	}
	return imp, nil
}

func (c *Catalogue) importFrom(ctx context.Context, src io.Reader, opts ImportOptions) (Imported, error) {
	want := ""
	if opts.SHA256 != "" {
		d, err := normaliseDigest(opts.SHA256)
		if err != nil {
			return Imported{}, fmt.Errorf("expected checksum: %w", err)
		}
		want = d
	}
	if err := c.ensureDir(); err != nil {
		return Imported{}, err
	}
	var temps tempFiles
	defer temps.removeAll()

	received, err := temps.create(c.Dir)
	if err != nil {
		return Imported{}, err
	}
	n, sourceDigest, err := receive(ctx, received, src, opts)
	if err != nil {
		return Imported{}, err
	}
	if want != "" && sourceDigest != want {
		return Imported{}, fmt.Errorf("%w: expected sha256 %s, received %d bytes with sha256 %s", ErrChecksumMismatch, want, n, sourceDigest)
	}
	info, err := storage.Inspect(ctx, received)
	if err != nil {
		return Imported{}, err
	}
	if err := checkSource(info, n); err != nil {
		return Imported{}, err
	}

	stored, digest := received, sourceDigest
	if info.Format == "raw" {
		if stored, err = temps.create(c.Dir); err != nil {
			return Imported{}, err
		}
		if err := storage.Convert(ctx, storage.ConvertOptions{Source: received, SourceFormat: "raw", Dest: stored, DestFormat: "qcow2"}); err != nil {
			return Imported{}, err
		}
		temps.remove(received)
		if digest, err = hashFile(ctx, stored); err != nil {
			return Imported{}, err
		}
	}
	final, err := c.place(ctx, stored, digest, &temps)
	if err != nil {
		return Imported{}, err
	}

	st, err := storage.Inspect(ctx, final)
	if err != nil {
		return Imported{}, fmt.Errorf("inspect stored base: %w", err)
	}
	fst, err := os.Stat(final)
	if err != nil {
		return Imported{}, err
	}
	return Imported{
		Digest:       digest,
		SourceDigest: sourceDigest,
		Path:         final,
		SourceFormat: info.Format,
		VirtualSize:  st.VirtualSize,
		FileSize:     fst.Size(),
	}, nil
}

// receive copies src into the file at path, returning the byte count and
// their sha256, and holds the reader to opts.Size.
func receive(ctx context.Context, path string, src io.Reader, opts ImportOptions) (n int64, digest string, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	if opts.Size > 0 {
		src = io.LimitReader(src, opts.Size+1) // one more shows a reader running on
	}
	h := sha256.New()
	n, err = copyCtx(ctx, io.MultiWriter(f, h), src, opts.Progress)
	if err != nil {
		if opts.Size > 0 && n < opts.Size && !isCancel(err) {
			return n, "", fmt.Errorf("%w: %d of %d bytes arrived: %w", ErrIncomplete, n, opts.Size, err)
		}
		return n, "", fmt.Errorf("receive image: %w", err)
	}
	if opts.Size > 0 && n != opts.Size {
		return n, "", fmt.Errorf("%w: %d bytes arrived, %d announced", ErrIncomplete, n, opts.Size)
	}
	if err := f.Sync(); err != nil {
		return n, "", fmt.Errorf("sync received image: %w", err)
	}
	if err := f.Close(); err != nil {
		return n, "", fmt.Errorf("close received image: %w", err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// place makes the verified temporary file at tmp the base named digest.
// If that base exists it is kept, but only once its bytes are proven to be
// digest's and a standalone qcow2; a file whose content does not match its
// name (corrupted, or planted by an older labvm that named raw imports by
// their source) is replaced by the new copy.
func (c *Catalogue) place(ctx context.Context, tmp, digest string, temps *tempFiles) (string, error) {
	final := filepath.Join(c.Dir, digest+baseExt)
	// Re-check what is about to be stored: a raw image qemu-img turned into
	// something with a backing file must not become a base.
	info, err := storage.Inspect(ctx, tmp)
	if err != nil {
		return "", err
	}
	if info.Format != "qcow2" || info.BackingFile != "" || info.DataFile != "" {
		return "", fmt.Errorf("%w: stored copy is %s with backing %q", ErrUnsupportedFormat, info.Format, info.BackingFile)
	}
	if ok, err := c.holds(ctx, final, digest); err != nil {
		return "", err
	} else if ok {
		return final, nil
	}
	f, err := os.OpenFile(tmp, os.O_RDONLY, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := f.Chmod(baseMode); err != nil {
		return "", fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("store %s: %w", final, err)
	}
	temps.forget(tmp)
	return final, syncDir(c.Dir)
}

// holds reports whether path is a regular file whose bytes hash to digest
// and which is a standalone qcow2: only then may an import reuse it.
func (c *Catalogue) holds(ctx context.Context, path, digest string) (bool, error) {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !st.Mode().IsRegular() {
		return false, nil
	}
	got, err := hashFile(ctx, path)
	if err != nil {
		return false, err
	}
	if got != digest {
		return false, nil
	}
	info, err := storage.Inspect(ctx, path)
	if err != nil {
		return false, nil
	}
	return info.Format == "qcow2" && info.BackingFile == "" && info.DataFile == "", nil
}

// tempFiles tracks an import's temporary files so every exit removes them.
type tempFiles struct{ paths []string }

// create makes an empty private file in dir with a name doctor recognises
// as an interrupted import.
func (t *tempFiles) create(dir string) (string, error) {
	f, err := os.CreateTemp(dir, tempGlob)
	if err != nil {
		return "", fmt.Errorf("create temporary file: %w", err)
	}
	t.paths = append(t.paths, f.Name())
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("create temporary file: %w", err)
	}
	return f.Name(), nil
}

// forget drops a path that was renamed into place: its name may be reused
// by another import's temporary file.
func (t *tempFiles) forget(path string) {
	for i, p := range t.paths {
		if p == path {
			t.paths = append(t.paths[:i], t.paths[i+1:]...)
			return
		}
	}
}

func (t *tempFiles) remove(path string) {
	// A file that stays behind keeps its .import- name, which doctor
	// reports as an interrupted import; the import itself is unaffected.
	_ = os.Remove(path)
	t.forget(path)
}

func (t *tempFiles) removeAll() {
	for _, p := range t.paths {
		_ = os.Remove(p) // as in remove: doctor reports a leftover
	}
	t.paths = nil
}

// ensureDir creates Dir and forces its mode: the umask must not make bases
// unreachable for QEMU.
func (c *Catalogue) ensureDir() error {
	if err := os.MkdirAll(c.Dir, dirMode); err != nil {
		return fmt.Errorf("create catalogue directory: %w", err)
	}
	if err := os.Chmod(c.Dir, dirMode); err != nil {
		return fmt.Errorf("create catalogue directory: %w", err)
	}
	return nil
}

// checkSource accepts only what a base can be. qemu-img calls anything it
// cannot recognise "raw", so raw additionally has to look like a disk: a
// non-empty whole number of sectors.
func checkSource(info storage.DiskInfo, size int64) error {
	const accepted = "accepted: qcow2 without a backing file, or a raw disk image whose size is a non-zero multiple of 512 bytes"
	switch info.Format {
	case "qcow2":
		if info.BackingFile != "" {
			return fmt.Errorf("%w: qcow2 has backing file %q; flatten it first (qemu-img convert -O qcow2); %s", ErrUnsupportedFormat, info.BackingFile, accepted)
		}
		if info.DataFile != "" {
			return fmt.Errorf("%w: qcow2 keeps its data in external file %q; %s", ErrUnsupportedFormat, info.DataFile, accepted)
		}
		return nil
	case "raw":
		if size == 0 || size%512 != 0 {
			return fmt.Errorf("%w: file of %d bytes is not a disk image; %s", ErrUnsupportedFormat, size, accepted)
		}
		return nil
	default:
		return fmt.Errorf("%w: %s; %s", ErrUnsupportedFormat, info.Format, accepted)
	}
}

func hashFile(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := copyCtx(ctx, h, f, nil); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyCtx is io.Copy that checks ctx between chunks (images are gigabytes
// and a cancelled import must stop promptly) and reports the running total
// to progress, if set. It returns the bytes written.
func copyCtx(ctx context.Context, dst io.Writer, src io.Reader, progress func(int64)) (int64, error) {
	buf := make([]byte, copyChunk)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, rerr := src.Read(buf)
		if m > 0 {
			if _, err := dst.Write(buf[:m]); err != nil {
				return n, err
			}
			n += int64(m)
			if progress != nil {
				progress(n)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// CheckDigest validates a sha256 a user gave, so the daemon can refuse it
// before any operation starts.
func CheckDigest(d string) error {
	_, err := normaliseDigest(d)
	return err
}

func normaliseDigest(d string) (string, error) {
	d = strings.ToLower(strings.TrimSpace(d))
	if len(d) != sha256.Size*2 {
		return "", fmt.Errorf("%w: %q is not 64 hex characters", ErrInvalidDigest, d)
	}
	if _, err := hex.DecodeString(d); err != nil {
		return "", fmt.Errorf("%w: %q is not 64 hex characters", ErrInvalidDigest, d)
	}
	return d, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
