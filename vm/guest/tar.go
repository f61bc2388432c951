package guest

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
)

// Directory copies travel as tar streams with entries relative to the
// copied directory ("./a/b"). Either end may be hostile (a guest's root
// writes the archive the CLI unpacks; a user writes the one root unpacks
// in the guest), so both ends pass every entry through TarNames: no
// absolute names, no "..", nothing written through a symlink the same
// archive made, only files, directories and symlinks.

// ErrUnsafeTar is wrapped by every refusal of an archive entry.
var ErrUnsafeTar = errors.New("unsafe entry in archive")

// TarNames checks the entries of one archive, in order.
type TarNames struct {
	links map[string]bool
}

// Check returns the entry's cleaned name ("" for the archive's root
// directory) and whether to keep it; devices, FIFOs and sockets are
// skipped (keep false, no error). Anything that could write outside the
// destination is an error.
func (c *TarNames) Check(h *tar.Header) (string, bool, error) {
	name := strings.TrimPrefix(h.Name, "./")
	if name == "." || name == "./" {
		name = ""
	}
	if strings.HasPrefix(name, "/") || strings.IndexByte(name, 0) >= 0 {
		return "", false, fmt.Errorf("%w: %q is absolute", ErrUnsafeTar, h.Name)
	}
	if name != "" {
		name = path.Clean(name)
	}
	if name == "." {
		name = ""
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", false, fmt.Errorf("%w: %q uses .. to climb out of the directory", ErrUnsafeTar, h.Name)
		}
	}
	if name != "" {
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if c.links[dir] {
				return "", false, fmt.Errorf("%w: %q goes through the symlink %q", ErrUnsafeTar, h.Name, dir)
			}
		}
	}
	switch h.Typeflag {
	case tar.TypeDir:
		return name, true, nil
	case tar.TypeReg, tar.TypeGNUSparse:
		if name == "" {
			return "", false, fmt.Errorf("%w: a file as the archive's root", ErrUnsafeTar)
		}
		return name, true, nil
	case tar.TypeSymlink:
		if name == "" {
			return "", false, fmt.Errorf("%w: a symlink as the archive's root", ErrUnsafeTar)
		}
		if c.links == nil {
			c.links = map[string]bool{}
		}
		c.links[name] = true
		return name, true, nil
	case tar.TypeLink:
		return "", false, fmt.Errorf("%w: %q is a hard link, which labvm cp does not copy", ErrUnsafeTar, h.Name)
	}
	return name, false, nil
}

// CleanHeader is the header a kept entry is passed on with: its cleaned
// name, permission bits only (no setuid, setgid or sticky), no owner (the
// receiving end gives everything to its user), whole-second times.
func CleanHeader(h *tar.Header, name string) *tar.Header {
	out := &tar.Header{
		Typeflag: h.Typeflag,
		Name:     "./" + name,
		Mode:     h.Mode & 0o777,
		Size:     h.Size,
		ModTime:  h.ModTime.Truncate(time.Second),
		Format:   tar.FormatGNU,
	}
	switch h.Typeflag {
	case tar.TypeDir:
		out.Name, out.Size = strings.TrimSuffix(out.Name, "/")+"/", 0
	case tar.TypeSymlink:
		out.Linkname, out.Size = h.Linkname, 0
	case tar.TypeGNUSparse:
		out.Typeflag = tar.TypeReg
	}
	if name == "" {
		out.Name = "./"
	}
	return out
}

// FilterTar copies the archive in r to w keeping only what TarNames
// allows, with CleanHeader's headers, and returns the bytes of file
// content passed on. A refused entry ends the copy with an error.
func FilterTar(w io.Writer, r io.Reader) (int64, error) {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	var names TarNames
	var total int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return total, fmt.Errorf("read archive: %w", err)
		}
		name, keep, err := names.Check(h)
		if err != nil {
			return total, err
		}
		if !keep {
			continue
		}
		if err := tw.WriteHeader(CleanHeader(h, name)); err != nil {
			return total, fmt.Errorf("archive entry %q: %w", name, err)
		}
		if h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeGNUSparse {
			n, err := io.Copy(tw, tr)
			total += n
			if err != nil {
				return total, fmt.Errorf("archive entry %q: %w", name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return total, fmt.Errorf("end archive: %w", err)
	}
	return total, nil
}
