package main

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/vm"
	"github.com/labvm/labvm/vm/guest"
	"github.com/spf13/cobra"
)

func newCopyCommand(a *app) *cobra.Command {
	var recursive, quiet bool
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files into or out of an instance, without SSH",
		Long: `Copy a file or (with -r) a directory between this host and an instance,
through labvmd, which streams it to the guest itself; SSH need not be on.

One side is NAME:PATH, the other a local path or - (standard input or
output). In the guest, ~ and relative paths are the instance user's home;
files are written as that user, with the source's permission bits, under a
temporary name renamed once complete: a failed copy (a full disk) leaves
nothing behind. A path ending in / is a directory to copy into (made if its
parent exists). Directory copies never merge: the target must not exist.
Name a local file containing ':' as ./FILE.

Only the instance's own user may copy; every copy is in the audit log.`,
		Example: `  labvm cp ./train.csv alice-dev:~/data/
  labvm cp -r alice-dev:~/results ./results
  labvm cp - alice-dev:/tmp/x < big.bin
  labvm cp alice-dev:/tmp/x - > out`,
		GroupID: "access",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageErrorf("usage: labvm cp [-r] SRC DST, one of them NAME:PATH")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			plan, err := planCopy(args[0], args[1], recursive)
			if err != nil {
				return err
			}
			live := !quiet && !a.json() && isTerminal(a.stderr)
			var res api.CopyResult
			if plan.in {
				res, err = a.copyIn(cmd.Context(), plan, live)
			} else {
				res, err = a.copyOut(cmd.Context(), plan, live)
			}
			if err != nil {
				return err
			}
			if a.json() && !(plan.local.stdio && !plan.in) {
				return printJSON(a.stdout, res)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "copy a directory and everything in it")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	return cmd
}

// copyEnd is one side of a copy as written on the command line.
type copyEnd struct {
	stdio    bool
	instance string
	// path is the guest path after "NAME:" or the local path.
	path string
}

func (e copyEnd) remote() bool { return e.instance != "" }

// parseCopyEnd reads "-", "NAME:PATH" or a local path. A prefix before
// the first ':' is an instance only when it is a valid instance name and
// has no '/', so ./a:b and /x:y stay local.
func parseCopyEnd(s string) copyEnd {
	if s == "-" {
		return copyEnd{stdio: true}
	}
	if name, p, ok := strings.Cut(s, ":"); ok && vm.ValidateName(name) == nil {
		return copyEnd{instance: name, path: p}
	}
	return copyEnd{path: s}
}

// copyPlan is a checked copy: which way, and its two ends.
type copyPlan struct {
	in            bool
	recursive     bool
	local, remote copyEnd
	guestPath     guest.GuestPath
}

func planCopy(src, dst string, recursive bool) (copyPlan, error) {
	s, d := parseCopyEnd(src), parseCopyEnd(dst)
	p := copyPlan{recursive: recursive}
	switch {
	case s.remote() && d.remote():
		return p, usageErrorf("both sides are instances (%s, %s): copy through this host, one side at a time", s.instance, d.instance)
	case !s.remote() && !d.remote():
		return p, usageErrorf("neither side is an instance: write one as NAME:PATH (e.g. alice-dev:~/data/); for local copies use cp")
	case s.remote():
		p.local, p.remote = d, s
	default:
		p.in, p.local, p.remote = true, s, d
	}
	if p.local.stdio && recursive {
		return p, usageErrorf("-r copies directories between paths; standard input and output carry one file")
	}
	if !p.local.stdio && p.local.path == "" {
		return p, usageErrorf("empty local path")
	}
	gp, err := guest.ParseGuestPath(p.remote.path)
	if err != nil {
		return p, usageErrorf("%v", err)
	}
	p.guestPath = gp
	return p, nil
}

// copyIn sends a local file, stdin or (recursive) a directory.
func (a *app) copyIn(ctx context.Context, p copyPlan, live bool) (api.CopyResult, error) {
	req := api.CopyInRequest{Path: p.remote.path, Kind: api.CopyFile, Mode: 0o644}
	var body io.Reader
	size := int64(-1)
	label := "standard input"
	if p.local.stdio {
		body = a.stdin
	} else {
		st, err := os.Stat(p.local.path)
		if err != nil {
			return api.CopyResult{}, localErr(err, p.local.path)
		}
		label = p.local.path
		// "." and "dir/.." name the directory they are.
		abs, err := filepath.Abs(p.local.path)
		if err != nil {
			return api.CopyResult{}, err
		}
		if req.Name = filepath.Base(abs); req.Name == string(filepath.Separator) {
			return api.CopyResult{}, usageErrorf("copying / is not supported: name a directory below it")
		}
		req.Mode = uint32(st.Mode().Perm())
		switch {
		case st.IsDir() && !p.recursive:
			return api.CopyResult{}, usageErrorf("%s is a directory: copy it with -r", p.local.path)
		case st.IsDir():
			req.Kind = api.CopyDir
			size = -1
			pr, pw := io.Pipe()
			go func() { pw.CloseWithError(writeTree(pw, p.local.path, a.stderr)) }()
			defer func() { _ = pr.Close() }()
			body = pr
		case !st.Mode().IsRegular():
			return api.CopyResult{}, usageErrorf("%s is not a regular file or directory", p.local.path)
		default:
			f, err := os.Open(p.local.path)
			if err != nil {
				return api.CopyResult{}, localErr(err, p.local.path)
			}
			defer f.Close()
			body, size = f, st.Size()
		}
	}
	m := newByteMeter(a.stderr, live, "Copying", label, size)
	res, err := a.client().CopyIn(ctx, p.remote.instance, req, &countingReader{r: body, report: m.update}, size)
	m.stop()
	return res, err
}

// writeTree writes the directory root as a tar stream, entries "./…";
// anything but files, directories and symlinks is skipped with a note.
func writeTree(w io.Writer, root string, notes io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		case info.IsDir(), info.Mode().IsRegular():
		default:
			fmt.Fprintf(notes, "labvm: skipping %s: not a file, directory or symlink\n", p)
			return nil
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		h.Name = "./" + filepath.ToSlash(rel)
		if info.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		h.Format = tar.FormatGNU
		h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
		h.ModTime = h.ModTime.Truncate(time.Second)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.CopyN(tw, f, h.Size); err != nil {
			return fmt.Errorf("%s: %w (did it change during the copy?)", p, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// copyOut receives a guest file into a local file or stdout, or a
// directory into a new local directory.
func (a *app) copyOut(ctx context.Context, p copyPlan, live bool) (api.CopyResult, error) {
	s, err := a.client().CopyOut(ctx, p.remote.instance, api.CopyOutRequest{Path: p.remote.path, Recursive: p.recursive})
	if err != nil {
		return api.CopyResult{}, err
	}
	defer func() { _ = s.Close() }()
	res := api.CopyResult{Path: s.Info.Path}
	label := p.remote.instance + ":" + s.Info.Path
	m := newByteMeter(a.stderr, live, "Copying", label, s.Info.Size)
	defer m.stop()
	body := &countingReader{r: s, report: m.update}
	finish := func() error {
		if s.Err() != nil {
			return s.Err()
		}
		return nil
	}
	if p.local.stdio {
		n, err := io.Copy(a.stdout, body)
		res.Bytes = n
		if err != nil {
			return res, errors.Join(fmt.Errorf("copy %s: %w", label, err), s.Err())
		}
		return res, finish()
	}
	target, err := localTarget(p.local.path, path.Base(s.Info.Path))
	if err != nil {
		return res, err
	}
	res.Path = target
	if s.Info.Kind == api.CopyFile {
		res.Bytes, err = receiveFile(body, target, fs.FileMode(s.Info.Mode), finish)
	} else {
		res.Bytes, err = receiveTree(body, target, fs.FileMode(s.Info.Mode), finish)
	}
	return res, err
}

// localTarget is where a copy out lands: into dst when it is a directory,
// else dst itself, whose directory must exist.
func localTarget(dst, base string) (string, error) {
	st, err := os.Stat(dst)
	if err == nil && st.IsDir() {
		return filepath.Join(dst, base), nil
	}
	if strings.HasSuffix(dst, "/") {
		return "", fmt.Errorf("%s: no such directory", dst)
	}
	dir := filepath.Dir(dst)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", fmt.Errorf("%s: no such directory %s", dst, dir)
	}
	return dst, nil
}

func tempToken() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// receiveFile writes r to a temporary file beside target and renames it
// over target once r ended and finish says it was complete.
func receiveFile(r io.Reader, target string, mode fs.FileMode, finish func() error) (int64, error) {
	if st, err := os.Stat(target); err == nil && st.IsDir() {
		return 0, fmt.Errorf("%s is a directory", target)
	}
	tmp := filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".labvm-cp-"+tempToken())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, localErr(err, tmp)
	}
	n, err := io.Copy(f, r)
	if err == nil {
		err = finish()
	}
	if err == nil {
		err = f.Chmod(mode.Perm())
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, target)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return n, err
	}
	return n, nil
}

// receiveTree unpacks the tar stream r into a new directory beside target
// and renames it to target, which must not exist. Every entry passes
// guest.TarNames: what the guest sends cannot write outside the new
// directory.
func receiveTree(r io.Reader, target string, mode fs.FileMode, finish func() error) (int64, error) {
	if _, err := os.Lstat(target); err == nil {
		return 0, &api.Error{Code: api.CodeAlreadyExists, Message: fmt.Sprintf("%s already exists", target),
			Hint: "directory copies never merge: remove it first, or copy into another directory"}
	}
	stage := filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".labvm-cp-"+tempToken())
	if err := os.Mkdir(stage, 0o700); err != nil {
		return 0, localErr(err, stage)
	}
	n, err := unpackTree(r, stage)
	if err == nil {
		err = finish()
	}
	if err == nil {
		err = os.Chmod(stage, mode.Perm())
	}
	if err == nil {
		err = os.Rename(stage, target)
	}
	if err != nil {
		removeStage(stage)
		return n, err
	}
	return n, nil
}

// removeStage removes a half-received tree. Its directories already carry
// the guest's modes, read-only ones included, which would stop a user
// (not root) from removing what is in them: make them writable first.
func removeStage(stage string) {
	_ = filepath.WalkDir(stage, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(path, 0o700)
		}
		return nil
	})
	_ = os.RemoveAll(stage)
}

func unpackTree(r io.Reader, root string) (int64, error) {
	tr := tar.NewReader(r)
	var names guest.TarNames
	var total int64
	type dirMode struct {
		path string
		mode fs.FileMode
	}
	var dirs []dirMode
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return total, fmt.Errorf("read the directory's archive: %w", err)
		}
		name, keep, err := names.Check(h)
		if err != nil {
			return total, err
		}
		if !keep || name == "" {
			continue
		}
		p := filepath.Join(root, filepath.FromSlash(name))
		perm := fs.FileMode(h.Mode) & 0o777
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return total, err
			}
			dirs = append(dirs, dirMode{p, perm})
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return total, err
			}
		default:
			_ = os.Remove(p)
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return total, err
			}
			n, err := io.Copy(f, tr)
			total += n
			if err == nil {
				err = f.Chmod(perm)
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return total, err
			}
			_ = os.Chtimes(p, h.ModTime, h.ModTime)
		}
	}
	// Directory modes last, deepest first: a read-only directory must
	// not stop its own contents from being written.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chmod(dirs[i].path, dirs[i].mode); err != nil {
			return total, err
		}
	}
	return total, nil
}

func localErr(err error, p string) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("%s: no such file or directory", p)}
	case errors.Is(err, fs.ErrPermission):
		return &api.Error{Code: api.CodePermissionDenied, Message: fmt.Sprintf("%s: permission denied", p),
			Hint: "labvm reads and writes local files with your own rights"}
	}
	return err
}
