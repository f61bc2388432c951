package guest

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseGuestPath(t *testing.T) {
	tests := []struct {
		in      string
		want    GuestPath
		wantErr string
	}{
		{in: "", want: GuestPath{Kind: PathHome, Dir: true}},
		{in: "~", want: GuestPath{Kind: PathHome, Dir: true}},
		{in: "~/", want: GuestPath{Kind: PathHome, Dir: true}},
		{in: ".", want: GuestPath{Kind: PathHome, Dir: true}},
		{in: "~/data/", want: GuestPath{Kind: PathHome, Rest: "data", Dir: true}},
		{in: "~/data", want: GuestPath{Kind: PathHome, Rest: "data"}},
		{in: "data/train.csv", want: GuestPath{Kind: PathHome, Rest: "data/train.csv"}},
		{in: "~//a//b/./c", want: GuestPath{Kind: PathHome, Rest: "a/b/c"}},
		{in: "a/b/..", want: GuestPath{Kind: PathHome, Rest: "a"}},
		{in: "a/.", want: GuestPath{Kind: PathHome, Rest: "a", Dir: true}},
		{in: "/tmp/x", want: GuestPath{Kind: PathAbsolute, Rest: "/tmp/x"}},
		{in: "/tmp/", want: GuestPath{Kind: PathAbsolute, Rest: "/tmp", Dir: true}},
		{in: "/", want: GuestPath{Kind: PathAbsolute, Rest: "/", Dir: true}},
		{in: "/a/../../etc", want: GuestPath{Kind: PathAbsolute, Rest: "/etc"}},
		{in: "~root/x", wantErr: "~USER is not supported"},
		{in: "~bob", wantErr: "~USER is not supported"},
		{in: "..", wantErr: "leaves the home"},
		{in: "~/../etc/passwd", wantErr: "leaves the home"},
		{in: "a/../../b", wantErr: "leaves the home"},
		{in: "a\x00b", wantErr: "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseGuestPath(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseGuestPath(%q) = %+v, %v; want error with %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseGuestPath(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseProbe(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    Probe
		wantErr error
		errText string
	}{
		{name: "file", out: "ok\x001000\x001000\x00/home/alice\x00/home/alice/x\x00f\x00d\x00644\x0012\x00-\x00",
			want: Probe{UID: 1000, GID: 1000, Home: "/home/alice", Path: "/home/alice/x", Type: TypeFile, ParentType: TypeDir, Mode: 0o644, Size: 12, ChildType: TypeMissing}},
		{name: "no user", out: "nouser\x00", wantErr: ErrNoGuestUser},
		{name: "short", out: "ok\x001\x00", errText: "unexpected answer"},
		{name: "bad type", out: "ok\x001\x001\x00/h\x00/h\x00z\x00d\x00644\x000\x00-\x00", errText: "unexpected file type"},
		{name: "relative", out: "ok\x001\x001\x00\x00x\x00-\x00-\x000\x000\x00-\x00", errText: "not absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseProbe([]byte(tt.out))
			switch {
			case tt.wantErr != nil || tt.errText != "":
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("ParseProbe = %+v, %v", got, err)
				}
			case err != nil || got != tt.want:
				t.Fatalf("ParseProbe = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// TestProbeScript runs the probe with the host's sh against a fake passwd
// entry: the user is root (always in /etc/passwd), paths are absolute.
func TestProbeScript(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("hello"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(user string, p GuestPath, base string) (Probe, error) {
		req := ProbeRequest(user, p, base)
		out, err := exec.Command(req.Path, req.Args...).Output()
		if err != nil {
			t.Fatal(err)
		}
		return ParseProbe(out)
	}
	pr, err := run("root", GuestPath{Kind: PathAbsolute, Rest: filepath.Join(dir, "f")}, "")
	if err != nil || pr.Type != TypeFile || pr.ParentType != TypeDir || pr.Mode != 0o640 || pr.Size != 5 || pr.UID != 0 {
		t.Fatalf("probe of a file: %+v, %v", pr, err)
	}
	pr, err = run("root", GuestPath{Kind: PathAbsolute, Rest: dir}, "sub")
	if err != nil || pr.Type != TypeDir || pr.ChildType != TypeDir {
		t.Fatalf("probe of a dir with a child: %+v, %v", pr, err)
	}
	pr, err = run("root", GuestPath{Kind: PathAbsolute, Rest: filepath.Join(dir, "missing", "x")}, "")
	if err != nil || pr.Type != TypeMissing || pr.ParentType != TypeMissing {
		t.Fatalf("probe of a missing path: %+v, %v", pr, err)
	}
	pr, err = run("root", GuestPath{Kind: PathHome, Rest: "x y"}, "")
	if err != nil || pr.Path != strings.TrimSuffix(pr.Home, "/")+"/x y" {
		t.Fatalf("probe under the home: %+v, %v", pr, err)
	}
	if _, err := run("no-such-user-labvm", GuestPath{Kind: PathHome}, ""); !errors.Is(err, ErrNoGuestUser) {
		t.Fatalf("probe of a missing user: %v", err)
	}
}

func tarOf(t *testing.T, entries ...*tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range entries {
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = 3
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte("abc")[:h.Size]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestFilterTar(t *testing.T) {
	dir := func(n string, mode int64) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeDir, Name: n, Mode: mode}
	}
	file := func(n string, mode int64) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: mode, Uid: 1234, Uname: "mallory"}
	}
	link := func(n, to string) *tar.Header { return &tar.Header{Typeflag: tar.TypeSymlink, Name: n, Linkname: to} }
	tests := []struct {
		name    string
		in      []*tar.Header
		want    []string // name mode
		wantErr string
	}{
		{name: "plain tree", in: []*tar.Header{dir("./", 0o755), dir("./a/", 0o750), file("./a/x", 0o4755), link("./l", "/etc/passwd")},
			want: []string{"./ 755", "./a/ 750", "./a/x 755", "./l 0"}},
		{name: "names without ./", in: []*tar.Header{file("b/c", 0o600)}, want: []string{"./b/c 600"}},
		{name: "fifo skipped", in: []*tar.Header{{Typeflag: tar.TypeFifo, Name: "./p"}, file("./x", 0o644)}, want: []string{"./x 644"}},
		{name: "absolute", in: []*tar.Header{file("/etc/passwd", 0o644)}, wantErr: "absolute"},
		{name: "dot dot", in: []*tar.Header{file("./a/../../x", 0o644)}, wantErr: "to climb out"},
		{name: "through a symlink", in: []*tar.Header{link("./l", "/etc"), file("./l/passwd", 0o644)}, wantErr: "goes through the symlink"},
		{name: "through a deeper symlink", in: []*tar.Header{dir("./a", 0o755), link("./a/l", "/"), file("./a/l/b/c", 0o644)}, wantErr: "goes through the symlink"},
		{name: "hard link", in: []*tar.Header{file("./x", 0o644), {Typeflag: tar.TypeLink, Name: "./y", Linkname: "./x"}}, wantErr: "hard link"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := FilterTar(&out, bytes.NewReader(tarOf(t, tt.in...)))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrUnsafeTar) {
					t.Fatalf("FilterTar: %v; want an unsafe-entry error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			tr := tar.NewReader(&out)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if h.Uid != 0 || h.Uname != "" {
					t.Fatalf("%s keeps its owner %d %q", h.Name, h.Uid, h.Uname)
				}
				got = append(got, fmt.Sprintf("%s %o", h.Name, h.Mode))
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("FilterTar kept %q, want %q", got, tt.want)
			}
		})
	}
}
