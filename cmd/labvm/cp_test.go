package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/vm/guest"
)

func TestPlanCopy(t *testing.T) {
	tests := []struct {
		src, dst  string
		recursive bool
		wantIn    bool
		instance  string
		guestPath guest.GuestPath
		local     copyEnd
		wantErr   string
	}{
		{src: "./train.csv", dst: "alice-dev:~/data/", wantIn: true, instance: "alice-dev",
			guestPath: guest.GuestPath{Kind: guest.PathHome, Rest: "data", Dir: true}, local: copyEnd{path: "./train.csv"}},
		{src: "alice-dev:~/results", dst: "./results", recursive: true, instance: "alice-dev",
			guestPath: guest.GuestPath{Kind: guest.PathHome, Rest: "results"}, local: copyEnd{path: "./results"}},
		{src: "-", dst: "alice-dev:/tmp/x", wantIn: true, instance: "alice-dev",
			guestPath: guest.GuestPath{Kind: guest.PathAbsolute, Rest: "/tmp/x"}, local: copyEnd{stdio: true}},
		{src: "alice-dev:/tmp/x", dst: "-", instance: "alice-dev",
			guestPath: guest.GuestPath{Kind: guest.PathAbsolute, Rest: "/tmp/x"}, local: copyEnd{stdio: true}},
		{src: "box:", dst: "out", instance: "box", guestPath: guest.GuestPath{Kind: guest.PathHome, Dir: true}, local: copyEnd{path: "out"}},
		{src: "box:notes.txt", dst: "/tmp/a:b", instance: "box",
			guestPath: guest.GuestPath{Kind: guest.PathHome, Rest: "notes.txt"}, local: copyEnd{path: "/tmp/a:b"}},
		// A prefix that is no instance name stays a local path.
		{src: "./a:b", dst: "box:~", wantIn: true, instance: "box", guestPath: guest.GuestPath{Kind: guest.PathHome, Dir: true}, local: copyEnd{path: "./a:b"}},
		{src: "a:b", dst: "box:~", wantIn: true, instance: "box", guestPath: guest.GuestPath{Kind: guest.PathHome, Dir: true}, local: copyEnd{path: "a:b"}},
		{src: "Box:x", dst: "box:~", wantIn: true, instance: "box", guestPath: guest.GuestPath{Kind: guest.PathHome, Dir: true}, local: copyEnd{path: "Box:x"}},
		{src: "one:x", dst: "two:y", wantErr: "both sides are instances"},
		{src: "./x", dst: "./y", wantErr: "neither side is an instance"},
		{src: "-", dst: "-", wantErr: "neither side is an instance"},
		{src: "-", dst: "box:/tmp/x", recursive: true, wantErr: "-r copies directories"},
		{src: "box:/tmp/x", dst: "-", recursive: true, wantErr: "-r copies directories"},
		{src: "x", dst: "box:~root/x", wantErr: "~USER is not supported"},
		{src: "box:../etc/passwd", dst: "x", wantErr: "leaves the home"},
		{src: "", dst: "box:x", wantErr: "empty local path"},
	}
	for _, tt := range tests {
		t.Run(tt.src+" "+tt.dst, func(t *testing.T) {
			p, err := planCopy(tt.src, tt.dst, tt.recursive)
			if tt.wantErr != "" {
				var ue *usageError
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.As(err, &ue) {
					t.Fatalf("planCopy(%q, %q) = %+v, %v; want a usage error with %q", tt.src, tt.dst, p, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.in != tt.wantIn || p.remote.instance != tt.instance || p.guestPath != tt.guestPath || p.local != tt.local {
				t.Fatalf("planCopy(%q, %q) = %+v", tt.src, tt.dst, p)
			}
		})
	}
}

func hostileTar(t *testing.T, entries ...*tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range entries {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(bytes.Repeat([]byte("x"), int(h.Size))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestReceiveTree unpacks archives as a guest might send them: a good
// one lands with its modes; hostile ones fail and leave nothing, neither
// the target nor anything outside it.
func TestReceiveTree(t *testing.T) {
	dir := t.TempDir()
	// The received trees keep their read-only directories; a user other
	// than root could not remove the temporary directory otherwise.
	t.Cleanup(func() { removeStage(dir) })
	outside := filepath.Join(dir, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	ok := func(name string, mode int64, size int64) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: size, ModTime: time.Unix(1e9, 0)}
	}
	good := hostileTar(t,
		&tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755},
		&tar.Header{Typeflag: tar.TypeDir, Name: "./ro/", Mode: 0o555},
		ok("./ro/f", 0o640, 5),
		&tar.Header{Typeflag: tar.TypeSymlink, Name: "./link", Linkname: "ro/f"},
	)
	target := filepath.Join(dir, "good")
	n, err := receiveTree(bytes.NewReader(good), target, 0o750, func() error { return nil })
	if err != nil || n != 5 {
		t.Fatalf("receiveTree: %d, %v", n, err)
	}
	for p, want := range map[string]os.FileMode{"": 0o750 | os.ModeDir, "ro": 0o555 | os.ModeDir, "ro/f": 0o640} {
		st, err := os.Stat(filepath.Join(target, p))
		if err != nil || st.Mode() != want {
			t.Fatalf("%s: %v, %v; want mode %v", p, st.Mode(), err, want)
		}
	}
	if _, err := receiveTree(bytes.NewReader(good), target, 0o750, func() error { return nil }); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("a second copy onto the same target: %v", err)
	}
	for name, archive := range map[string][]byte{
		"through a symlink": hostileTar(t, &tar.Header{Typeflag: tar.TypeSymlink, Name: "./l", Linkname: outside}, ok("./l/pwned", 0o644, 1)),
		"dot dot":           hostileTar(t, ok("./../outside/pwned", 0o644, 1)),
		"absolute":          hostileTar(t, ok(filepath.Join(outside, "pwned"), 0o644, 1)),
		"truncated":         good[:700],
	} {
		t.Run(name, func(t *testing.T) {
			target := filepath.Join(dir, "bad")
			if _, err := receiveTree(bytes.NewReader(archive), target, 0o755, func() error { return nil }); err == nil {
				t.Fatal("receiveTree accepted it")
			}
			left, _ := filepath.Glob(filepath.Join(dir, ".bad*"))
			if _, err := os.Lstat(target); err == nil || len(left) > 0 {
				t.Fatalf("a failed copy left %s or %v", target, left)
			}
			if ents, _ := os.ReadDir(outside); len(ents) > 0 {
				t.Fatalf("a hostile archive wrote %v outside its directory", ents)
			}
		})
	}
	// A failure the daemon reports after the last byte leaves nothing either.
	target = filepath.Join(dir, "late")
	if _, err := receiveTree(bytes.NewReader(good), target, 0o755, func() error { return &api.Error{Code: api.CodeInternal, Message: "cut"} }); err == nil {
		t.Fatal("receiveTree ignored the daemon's failure")
	}
	if _, err := os.Lstat(target); err == nil {
		t.Fatal("a failed copy left its target")
	}
}

func TestReceiveFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "f")
	if _, err := receiveFile(strings.NewReader("hello"), target, 0o751, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(target); err != nil || st.Mode() != 0o751 || st.Size() != 5 {
		t.Fatalf("received file: %v, %v", st, err)
	}
	if _, err := receiveFile(strings.NewReader("partial"), target, 0o644, func() error { return errors.New("cut short") }); err == nil {
		t.Fatal("receiveFile ignored the daemon's failure")
	}
	if b, _ := os.ReadFile(target); string(b) != "hello" {
		t.Fatalf("a failed copy changed the target to %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("a failed copy left %v", ents)
	}
}
