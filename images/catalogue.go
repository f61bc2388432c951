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
	// Source is the image file as the user gave it.
	Source string
	// SHA256 is the expected hex digest of Source; empty skips the check.
	// Case is ignored, as published checksum files vary.
	SHA256 string
}

// Imported describes a stored base image.
type Imported struct {
	// Digest is the sha256 of the source file as given, which is what users
	// can compare against a published checksum; for raw sources it is not
	// the digest of the stored qcow2.
	Digest       string
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

// Import validates opts.Source and stores it as a read-only qcow2 named by
// its digest. A qcow2 source is copied as is; a raw source is converted.
// Importing the same file twice returns the existing base. On any failure,
// including cancellation, Dir is left as it was.
func (c *Catalogue) Import(ctx context.Context, opts ImportOptions) (Imported, error) {
	imp, err := c.importImage(ctx, opts)
	if err != nil {
		return Imported{}, fmt.Errorf("import image %s: %w", opts.Source, err)
	}
	return imp, nil
}

func (c *Catalogue) importImage(ctx context.Context, opts ImportOptions) (Imported, error) {
	want := ""
	if opts.SHA256 != "" {
		d, err := normaliseDigest(opts.SHA256)
		if err != nil {
			return Imported{}, fmt.Errorf("expected checksum: %w", err)
		}
		want = d
	}
	st, err := os.Stat(opts.Source)
	if err != nil {
		return Imported{}, err
	}
	if !st.Mode().IsRegular() {
		return Imported{}, fmt.Errorf("%s is not a regular file", opts.Source)
	}

	digest, err := hashFile(ctx, opts.Source)
	if err != nil {
		return Imported{}, err
	}
	if want != "" && digest != want {
		return Imported{}, fmt.Errorf("%w: expected sha256 %s, file has %s", ErrChecksumMismatch, want, digest)
	}

	info, err := storage.Inspect(ctx, opts.Source)
	if err != nil {
		return Imported{}, err
	}
	if err := checkSource(info, st.Size()); err != nil {
		return Imported{}, err
	}

	if err := c.ensureDir(); err != nil {
		return Imported{}, err
	}
	final := filepath.Join(c.Dir, digest+baseExt)
	if _, err := os.Stat(final); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return Imported{}, err
		}
		if err := c.store(ctx, opts.Source, info.Format, digest, final); err != nil {
			return Imported{}, err
		}
	}

	stored, err := storage.Inspect(ctx, final)
	if err != nil {
		return Imported{}, fmt.Errorf("inspect stored base: %w", err)
	}
	fst, err := os.Stat(final)
	if err != nil {
		return Imported{}, err
	}
	return Imported{
		Digest:       digest,
		Path:         final,
		SourceFormat: info.Format,
		VirtualSize:  stored.VirtualSize,
		FileSize:     fst.Size(),
	}, nil
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

// store writes the base under a temporary name in Dir and renames it into
// place, so a base at its final name is always complete and read-only.
func (c *Catalogue) store(ctx context.Context, source, format, digest, final string) (err error) {
	tmp, err := os.CreateTemp(c.Dir, tempGlob)
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	tmpPath := tmp.Name()
	defer func() {
		tmp.Close()
		if err != nil {
			os.Remove(tmpPath)
		}
	}()

	switch format {
	case "qcow2":
		// Hash while copying: the copy must be the very bytes that were
		// checked, even if the source changes under us.
		got, err := copyHashed(ctx, tmp, source)
		if err != nil {
			return fmt.Errorf("copy %s: %w", source, err)
		}
		if got != digest {
			return fmt.Errorf("source %s changed while being imported", source)
		}
	case "raw":
		if err := tmp.Close(); err != nil {
			return err
		}
		if err := storage.Convert(ctx, storage.ConvertOptions{Source: source, SourceFormat: "raw", Dest: tmpPath, DestFormat: "qcow2"}); err != nil {
			return err
		}
		if tmp, err = os.OpenFile(tmpPath, os.O_RDWR, 0); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: %s", ErrUnsupportedFormat, format)
	}

	// Re-check what was actually written: a qcow2 that grew a backing file
	// between inspection and copy must not become a base.
	info, err := storage.Inspect(ctx, tmpPath)
	if err != nil {
		return err
	}
	if info.Format != "qcow2" || info.BackingFile != "" || info.DataFile != "" {
		return fmt.Errorf("%w: stored copy is %s with backing %q", ErrUnsupportedFormat, info.Format, info.BackingFile)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmpPath, err)
	}
	if err := tmp.Chmod(baseMode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmpPath, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmpPath, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(tmpPath, final); err != nil {
		return fmt.Errorf("store %s: %w", final, err)
	}
	return syncDir(c.Dir)
}

func hashFile(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if err := copyCtx(ctx, h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func copyHashed(ctx context.Context, dst io.Writer, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if err := copyCtx(ctx, io.MultiWriter(dst, h), f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyCtx is io.Copy that checks ctx between chunks; images are gigabytes
// and a cancelled import must stop promptly.
func copyCtx(ctx context.Context, dst io.Writer, src io.Reader) error {
	buf := make([]byte, copyChunk)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
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
