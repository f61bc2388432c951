package api

import (
	"net/url"
	"strconv"
	"strings"
)

// Copies into and out of an instance (`labvm cp`).
//
//	PUT /v1/instances/{name}/files?path=~/data/&kind=file&name=train.csv&mode=0644
//	    body: the file's bytes (kind=file) or a tar of a directory (kind=dir)
//	GET /v1/instances/{name}/files?path=~/results&recursive=true
//	    answer: the file's bytes, or a tar of the directory; headers below,
//	    and a failure after the first byte in the Labvm-Copy-Error trailer
//
// The path is as the user wrote it after "NAME:": "~" and relative paths
// are in the instance user's home.

// CopyKind is what a copy carries.
type CopyKind string

const (
	CopyFile CopyKind = "file"
	// CopyDir is a directory as a tar stream, entries relative to it.
	CopyDir CopyKind = "dir"
)

// Headers of a copy out, and the trailer that reports a failure after
// the first byte (a JSON ErrorResponse).
const (
	HeaderCopyKind  = "Labvm-Copy-Kind"
	HeaderCopyMode  = "Labvm-Copy-Mode"
	HeaderCopySize  = "Labvm-Copy-Size"
	HeaderCopyPath  = "Labvm-Copy-Path"
	TrailerCopyFail = "Labvm-Copy-Error"
)

// CopyInRequest is the query of a copy in.
type CopyInRequest struct {
	Path string
	Kind CopyKind
	// Name is the source's base name, used when Path is a directory to
	// copy into; empty for a stream (stdin), which then needs a file path.
	Name string
	// Mode is the permission bits to give the file or the directory.
	Mode uint32
}

// Query encodes the request for the URL.
func (r CopyInRequest) Query() url.Values {
	q := url.Values{"path": {r.Path}, "kind": {string(r.Kind)}, "mode": {"0" + strconv.FormatUint(uint64(r.Mode&0o777), 8)}}
	if r.Name != "" {
		q.Set("name", r.Name)
	}
	return q
}

// ParseCopyInQuery reads what Query wrote; unknown or repeated
// parameters are errors.
func ParseCopyInQuery(q url.Values) (CopyInRequest, error) {
	if err := onlyOnce(q, "path", "kind", "name", "mode"); err != nil {
		return CopyInRequest{}, err
	}
	r := CopyInRequest{Path: q.Get("path"), Kind: CopyKind(q.Get("kind")), Name: q.Get("name"), Mode: 0o644}
	switch r.Kind {
	case CopyFile, CopyDir:
	case "":
		r.Kind = CopyFile
	default:
		return r, Errorf(CodeInvalidArgument, "kind %q: want file or dir", r.Kind)
	}
	if m := q.Get("mode"); m != "" {
		v, err := strconv.ParseUint(m, 8, 32)
		if err != nil || v > 0o7777 {
			return r, Errorf(CodeInvalidArgument, "mode %q: want octal permission bits such as 0644", m)
		}
		r.Mode = uint32(v) & 0o777
	} else if r.Kind == CopyDir {
		r.Mode = 0o755
	}
	if r.Name == "." || r.Name == ".." || strings.ContainsAny(r.Name, "/\x00") {
		return r, Errorf(CodeInvalidArgument, "name %q: want a file name without /", r.Name)
	}
	return r, nil
}

// CopyOutRequest is the query of a copy out.
type CopyOutRequest struct {
	Path      string
	Recursive bool
}

// Query encodes the request for the URL.
func (r CopyOutRequest) Query() url.Values {
	q := url.Values{"path": {r.Path}}
	if r.Recursive {
		q.Set("recursive", "true")
	}
	return q
}

// ParseCopyOutQuery reads what Query wrote.
func ParseCopyOutQuery(q url.Values) (CopyOutRequest, error) {
	if err := onlyOnce(q, "path", "recursive"); err != nil {
		return CopyOutRequest{}, err
	}
	r := CopyOutRequest{Path: q.Get("path")}
	switch q.Get("recursive") {
	case "", "false":
	case "true":
		r.Recursive = true
	default:
		return r, Errorf(CodeInvalidArgument, "recursive %q: want true or false", q.Get("recursive"))
	}
	return r, nil
}

// CopyOutInfo is what a copy out sends before the bytes (as headers).
type CopyOutInfo struct {
	Kind CopyKind
	// Path is the resolved path in the guest.
	Path string
	Mode uint32
	// Size is the file's size, or the archive's; -1 when unknown.
	Size int64
}

// CopyResult is how a copy ended.
type CopyResult struct {
	// Path is the resolved path written in the guest.
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
}

func onlyOnce(q url.Values, known ...string) error {
	for k, v := range q {
		found := false
		for _, n := range known {
			found = found || k == n
		}
		if !found {
			return Errorf(CodeInvalidArgument, "unknown query parameter %q; known: %s", k, strings.Join(known, ", "))
		}
		if len(v) != 1 {
			return Errorf(CodeInvalidArgument, "query parameter %q given %d times", k, len(v))
		}
	}
	return nil
}
