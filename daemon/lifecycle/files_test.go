package lifecycle

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/vm/guest"
)

// TestCopyInTarget walks where a copy in lands for each thing the probe
// can find, and each refusal.
func TestCopyInTarget(t *testing.T) {
	const (
		d = guest.TypeDir
		f = guest.TypeFile
		o = guest.TypeOther
		m = guest.TypeMissing
	)
	file := api.CopyInRequest{Kind: api.CopyFile, Name: "train.csv"}
	stdin := api.CopyInRequest{Kind: api.CopyFile}
	tree := api.CopyInRequest{Kind: api.CopyDir, Name: "proj"}
	tests := []struct {
		name                string
		dir                 bool
		typ, parent, child  guest.FileType
		req                 api.CopyInRequest
		wantTarget, wantDir string
		wantKind            error
		wantMsg             string
	}{
		{name: "file into a directory", typ: d, parent: d, child: m, req: file, wantTarget: "/p/train.csv"},
		{name: "file over a file in a directory", typ: d, parent: d, child: f, req: file, wantTarget: "/p/train.csv"},
		{name: "file onto a directory's subdirectory", typ: d, parent: d, child: d, req: file, wantKind: errdefs.ErrConflict, wantMsg: "is a directory"},
		{name: "file onto a device", typ: d, parent: d, child: o, req: file, wantKind: errdefs.ErrConflict, wantMsg: "not a regular file"},
		{name: "file to a new name", typ: m, parent: d, req: file, wantTarget: "/p"},
		{name: "file over a file", typ: f, parent: d, req: file, wantTarget: "/p"},
		{name: "file into a missing directory with /", dir: true, typ: m, parent: d, child: m, req: file, wantTarget: "/p/train.csv", wantDir: "/p"},
		{name: "file into a file with /", dir: true, typ: f, parent: d, req: file, wantKind: errdefs.ErrConflict, wantMsg: "not a directory"},
		{name: "missing parent", typ: m, parent: m, req: file, wantKind: errdefs.ErrNotFound, wantMsg: "no such directory /"},
		{name: "parent is a file", typ: m, parent: f, req: file, wantKind: errdefs.ErrNotFound, wantMsg: "no such directory"},
		{name: "stdin into a directory", typ: d, parent: d, req: stdin, wantKind: errdefs.ErrInvalidArgument, wantMsg: "name the file"},
		{name: "stdin to a file", typ: m, parent: d, req: stdin, wantTarget: "/p"},
		{name: "tree into a directory", typ: d, parent: d, child: m, req: tree, wantTarget: "/p/proj"},
		{name: "tree onto an existing one", typ: d, parent: d, child: d, req: tree, wantKind: errdefs.ErrAlreadyExists, wantMsg: "already exists"},
		{name: "tree onto a file in a directory", typ: d, parent: d, child: f, req: tree, wantKind: errdefs.ErrAlreadyExists},
		{name: "tree to a new name", typ: m, parent: d, req: tree, wantTarget: "/p"},
		{name: "tree onto a file", typ: f, parent: d, req: tree, wantKind: errdefs.ErrAlreadyExists, wantMsg: "is a file"},
		{name: "onto a FIFO", typ: o, parent: d, req: file, wantKind: errdefs.ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pr := guest.Probe{Path: "/p", Type: tt.typ, ParentType: tt.parent, ChildType: tt.child}
			if tt.child == "" {
				pr.ChildType = m
			}
			target, mkdir, err := copyInTarget("box", guest.GuestPath{Kind: guest.PathAbsolute, Rest: "/p", Dir: tt.dir}, pr, tt.req)
			if tt.wantKind != nil {
				if !errors.Is(err, tt.wantKind) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("got %q, %q, %v; want %v mentioning %q", target, mkdir, err, tt.wantKind, tt.wantMsg)
				}
				return
			}
			if err != nil || target != tt.wantTarget || mkdir != tt.wantDir {
				t.Fatalf("got %q, %q, %v; want %q, %q", target, mkdir, err, tt.wantTarget, tt.wantDir)
			}
		})
	}
}

func TestReadAck(t *testing.T) {
	tests := []struct {
		in      string
		wantErr bool
		rest    string
	}{
		{in: "labvm-cp ok\nDATA", rest: "DATA"},
		{in: "SSH-2.0-OpenSSH_9.2\r\n", wantErr: true},
		{in: "labvm-cp ok", wantErr: true},
		{in: "labvm-cp okay and more than the answer\n", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		r := strings.NewReader(tt.in)
		err := readAck(r)
		if (err != nil) != tt.wantErr {
			t.Fatalf("readAck(%q) = %v", tt.in, err)
		}
		if rest, _ := io.ReadAll(r); !tt.wantErr && string(rest) != tt.rest {
			t.Fatalf("readAck(%q) consumed the data behind the answer: %q left", tt.in, rest)
		}
	}
}
