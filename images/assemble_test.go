package images

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labvm/labvm/test/hostreq"
)

// The disk step both image recipes run (images/disk/assemble.sh), on a
// tiny tree with stand-in kernel and initrd files: no root, no mount.

func assembleTools(t *testing.T) {
	t.Helper()
	for tool, pkg := range map[string]string{
		"mkfs.vfat": "dosfstools", "mmd": "mtools", "mcopy": "mtools", "mtype": "mtools",
		"syslinux": "syslinux", "mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs",
		"sfdisk": "fdisk", "qemu-img": "qemu-utils", "blkid": "util-linux",
	} {
		hostreq.RequireTool(t, tool, pkg)
	}
	_, err := os.Stat("/usr/lib/syslinux/mbr/mbr.bin")
	hostreq.Require(t, err == nil, "no /usr/lib/syslinux/mbr/mbr.bin (apt-get install syslinux-common)")
}

type assembleInputs struct{ tree, kernel, initrd, work string }

func newAssembleInputs(t *testing.T) assembleInputs {
	dir := t.TempDir()
	in := assembleInputs{
		tree:   filepath.Join(dir, "tree"),
		kernel: filepath.Join(dir, "vmlinuz"),
		initrd: filepath.Join(dir, "initrd.img"),
		work:   filepath.Join(dir, "work"),
	}
	for _, d := range []string{filepath.Join(in.tree, "etc"), in.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for path, content := range map[string]string{
		filepath.Join(in.tree, "etc", "hostname"): "assembled\n",
		in.kernel: "not a kernel\n",
		in.initrd: "not an initrd\n",
	} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return in
}

func (in assembleInputs) args(extra map[string]string, out string) []string {
	opts := map[string]string{
		"--tree": in.tree, "--kernel": in.kernel, "--initrd": in.initrd, "--work": in.work,
		"--boot-label": "TESTBOOT", "--root-label": "test-root", "--disk-id": "0a1b2c3d",
		"--cmdline": "console=ttyS0,115200 root=LABEL=test-root rw", "--boot-mib": "32", "--disk-mib": "104",
	}
	args := []string{filepath.Join("disk", "assemble.sh")}
	for k, v := range extra {
		if v == "" {
			delete(opts, k)
		} else {
			opts[k] = v
		}
	}
	for k, v := range opts {
		args = append(args, k, v)
	}
	return append(args, out)
}

func runAssemble(t *testing.T, args []string) (string, error) {
	t.Helper()
	out, err := exec.Command("bash", args...).CombinedOutput()
	return string(out), err
}

func TestAssembleScriptRefusesBadInput(t *testing.T) {
	assembleTools(t)
	in := newAssembleInputs(t)
	for _, tc := range []struct {
		name  string
		extra map[string]string
		want  string
	}{
		{"no tree", map[string]string{"--tree": ""}, "missing --tree"},
		{"no cmdline", map[string]string{"--cmdline": ""}, "missing --cmdline"},
		{"tree not a directory", map[string]string{"--tree": in.kernel}, "is not a directory"},
		{"kernel missing", map[string]string{"--kernel": in.kernel + ".gone"}, "cannot read kernel"},
		{"work missing", map[string]string{"--work": in.work + ".gone"}, "does not exist"},
		{"disk id not hex", map[string]string{"--disk-id": "LABVM!!!"}, "--disk-id must be 8 lower-case hex digits"},
		{"boot size zero", map[string]string{"--boot-mib": "0"}, "--boot-mib must be a positive number"},
		{"disk size words", map[string]string{"--disk-mib": "big"}, "--disk-mib must be a number of MiB or auto"},
		{"disk too small for the root", map[string]string{"--disk-mib": "90"}, "leaves under 64 MiB"},
		{"unknown option", map[string]string{"--bogus": "1"}, "unknown option --bogus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "disk.qcow2")
			msg, err := runAssemble(t, in.args(tc.extra, out))
			if err == nil || !strings.Contains(msg, tc.want) {
				t.Fatalf("err %v, output %q; want a failure saying %q", err, msg, tc.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatalf("%s exists after a refused input (stat: %v)", out, err)
			}
			left, _ := os.ReadDir(in.work)
			if len(left) != 0 {
				t.Fatalf("work directory keeps %d files after a refused input", len(left))
			}
		})
	}
}

func TestAssembleScriptLaysOutTheDisk(t *testing.T) {
	assembleTools(t)
	for _, tc := range []struct {
		name     string
		extra    map[string]string
		diskMiB  int64
		compress bool
	}{
		{"fixed size", nil, 104, false},
		// auto: 1 MiB + p1 + du -sm of the tree (1: it rounds up) * 115 / 100 + 1024 MiB
		{"size from the tree, compressed", map[string]string{"--disk-mib": "auto"}, 1 + 32 + 1 + 1024, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newAssembleInputs(t)
			out := filepath.Join(t.TempDir(), "disk.qcow2")
			args := in.args(tc.extra, out)
			if tc.compress {
				// a flag without a value: put it before the output
				args = append(args[:len(args)-1], "--compress", out)
			}
			if msg, err := runAssemble(t, args); err != nil {
				t.Fatalf("assemble: %v\n%s", err, msg)
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			if got, _ := os.ReadFile(out + ".sha256"); strings.TrimSpace(string(got)) != hex.EncodeToString(sum[:]) {
				t.Fatalf("%s.sha256 says %q, the file's digest is %x", out, got, sum)
			}
			if left, _ := os.ReadDir(in.work); len(left) != 0 {
				t.Fatalf("work directory keeps %d files", len(left))
			}
			info := cmdOut(t, "qemu-img", "info", out)
			if !strings.Contains(info, "file format: qcow2") {
				t.Fatalf("qemu-img info:\n%s", info)
			}

			raw := filepath.Join(t.TempDir(), "disk.raw")
			run(t, "qemu-img", "convert", "-O", "raw", out, raw)
			st, err := os.Stat(raw)
			if err != nil {
				t.Fatal(err)
			}
			if st.Size() != tc.diskMiB<<20 {
				t.Fatalf("disk is %d bytes, want %d MiB", st.Size(), tc.diskMiB)
			}
			table := cmdOut(t, "sfdisk", "-d", raw)
			for _, want := range []string{
				"label-id: 0x0a1b2c3d",
				raw + "1 : start=        2048, size=       65536, type=6, bootable",
				raw + "2 : start=       67584, size=" + padSectors(tc.diskMiB*2048-67584) + ", type=83",
			} {
				if !strings.Contains(table, want) {
					t.Fatalf("partition table lacks %q:\n%s", want, table)
				}
			}
			boot := filepath.Join(t.TempDir(), "boot.img")
			run(t, "dd", "if="+raw, "of="+boot, "bs=1M", "skip=1", "count=32", "status=none")
			root := filepath.Join(t.TempDir(), "root.img")
			run(t, "dd", "if="+raw, "of="+root, "bs=1M", "skip=33", "status=none", "conv=sparse")

			cfg := cmdOut(t, "mtype", "-i", boot, "::/syslinux/syslinux.cfg")
			if !strings.Contains(cfg, "SERIAL 0 115200\n") || !strings.Contains(cfg, "  APPEND console=ttyS0,115200 root=LABEL=test-root rw\n") {
				t.Fatalf("syslinux.cfg:\n%s", cfg)
			}
			if k := cmdOut(t, "mtype", "-i", boot, "::/vmlinuz"); k != "not a kernel\n" {
				t.Fatalf("/vmlinuz on p1 holds %q", k)
			}
			if k := cmdOut(t, "mtype", "-i", boot, "::/initrd.img"); k != "not an initrd\n" {
				t.Fatalf("/initrd.img on p1 holds %q", k)
			}
			if l := cmdOut(t, "blkid", "-p", "-o", "value", "-s", "LABEL", boot); strings.TrimSpace(l) != "TESTBOOT" {
				t.Fatalf("p1 label %q", l)
			}
			if l := cmdOut(t, "blkid", "-p", "-o", "value", "-s", "LABEL", root); strings.TrimSpace(l) != "test-root" {
				t.Fatalf("p2 label %q", l)
			}
			if h := cmdOut(t, "debugfs", "-R", "cat /etc/hostname", root); !strings.Contains(h, "assembled") {
				t.Fatalf("p2's /etc/hostname: %q", h)
			}
		})
	}
}

// padSectors formats a sector count as sfdisk -d does (right-aligned, 12 wide).
func padSectors(n int64) string { return fmt.Sprintf("%12d", n) }

func cmdOut(t *testing.T, name string, args ...string) string {
	t.Helper()
	c := exec.Command(name, args...)
	c.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out)
}
