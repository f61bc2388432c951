package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/api"
)

// TestBadInputChangesNothing: every bad create or import gets a clear
// error and leaves no record, file, domain or address behind.
func TestBadInputChangesNothing(t *testing.T) {
	image := requireHost(t)
	d := startDaemon(t)
	d.must("image", "import", "tiny", image)
	tmp := t.TempDir()

	garbage := filepath.Join(tmp, "notes.txt")
	if err := os.WriteFile(garbage, []byte("this is not a disk image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badKey := filepath.Join(tmp, "id_bad.pub")
	if err := os.WriteFile(badKey, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"name too short", []string{"create", "ab", "--image", "tiny", "--size", "Standard_B1s"}, "3-24 characters"},
		{"name too long", []string{"create", strings.Repeat("a", 25), "--image", "tiny", "--size", "Standard_B1s"}, "3-24 characters"},
		{"name with upper case", []string{"create", "Alice", "--image", "tiny", "--size", "Standard_B1s"}, "invalid instance name"},
		{"name starting with a digit", []string{"create", "1alice", "--image", "tiny", "--size", "Standard_B1s"}, "invalid instance name"},
		{"name ending with dash", []string{"create", "alice-", "--image", "tiny", "--size", "Standard_B1s"}, "ends with '-'"},
		{"name with a slash", []string{"create", "al/ice", "--image", "tiny", "--size", "Standard_B1s"}, "invalid instance name"},
		{"unknown size", []string{"create", "bob-dev", "--image", "tiny", "--size", "Standard_Z9"}, "unknown size"},
		{"missing size", []string{"create", "bob-dev", "--image", "tiny"}, "--size is required"},
		{"unknown image", []string{"create", "bob-dev", "--image", "nope", "--size", "Standard_B1s"}, "unknown image"},
		{"disk below the image", []string{"create", "bob-dev", "--image", "tiny", "--size", "Standard_B1s", "--disk-size", "1M"}, "below the image's size"},
		{"disk size unparsable", []string{"create", "bob-dev", "--image", "tiny", "--size", "Standard_B1s", "--disk-size", "lots"}, "disk-size"},
		{"ssh key is a private key", []string{"create", "bob-dev", "--image", "tiny", "--size", "Standard_B1s", "--ssh-key", badKey}, "public key"},
		{"ssh key file missing", []string{"create", "bob-dev", "--image", "tiny", "--size", "Standard_B1s", "--ssh-key", filepath.Join(tmp, "nope.pub")}, "--ssh-key"},
		{"unknown vnet", []string{"create", "bob-dev", "--image", "tiny", "--size", "Standard_B1s", "--vnet", "elsewhere"}, "unknown vnet"},
		{"image neither qcow2 nor raw", []string{"image", "import", "junk", garbage}, "qcow2"},
		{"image checksum mismatch", []string{"image", "import", "tiny2", image, "--sha256", strings.Repeat("0", 64)}, "sha256"},
		{"image name taken", []string{"image", "import", "tiny", image}, "already exists"},
		{"start of an unknown instance", []string{"start", "ghost"}, "not found"},
		{"exec with no command", []string{"exec", "ghost"}, "usage"},
	}
	for _, tt := range tests {
		d.chapter(t, tt.name, func(t *testing.T) {
			r := d.labvm(tt.args...)
			if r.code == 0 {
				t.Fatalf("succeeded; want an error mentioning %q", tt.want)
			}
			if !strings.Contains(strings.ToLower(r.stderr), strings.ToLower(tt.want)) {
				t.Fatalf("stderr does not mention %q:\n%s", tt.want, r.stderr)
			}
			d.assertPristine(t)
		})
	}
}

// assertPristine checks that only the image "tiny" exists: no instance,
// no instance files, no domain, no stray image file.
func (d *labvmd) assertPristine(t *testing.T) {
	t.Helper()
	var list []api.Instance
	d.jsonOut(&list, "list")
	if len(list) != 0 {
		t.Fatalf("instances exist: %+v", list)
	}
	if dirs := d.instanceDirs(); len(dirs) != 0 {
		t.Fatalf("instance files exist: %v", dirs)
	}
	if doms := d.domains(); len(doms) != 0 {
		t.Fatalf("domains exist: %v", doms)
	}
	var imgs []api.Image
	d.jsonOut(&imgs, "image", "list")
	if len(imgs) != 1 {
		t.Fatalf("images = %+v, want only tiny", imgs)
	}
	if files := mustGlob(filepath.Join(d.dataDir, "images", "*")); len(files) != 1 {
		t.Fatalf("image files = %v, want one", files)
	}
}

// TestCreateFailsHalfway: when the domain cannot start (here its base
// image vanished from under the daemon), create leaves no disk, seed,
// domain or address, shows CreateFailed with the reason, and delete
// removes the record.
func TestCreateFailsHalfway(t *testing.T) {
	requireHost(t) // this test makes its own image
	d := startDaemon(t)

	// A second image with its own content, so removing its file cannot
	// affect anything else.
	raw := filepath.Join(t.TempDir(), "blank.raw")
	if err := exec.Command("qemu-img", "create", "-f", "raw", raw, "16M").Run(); err != nil {
		t.Fatal(err)
	}
	d.must("image", "import", "blank", raw)
	// The base is named by the digest of the stored (converted) file, not
	// of the raw file imported.
	var imgs []api.Image
	d.jsonOut(&imgs, "image", "list")
	i := slices.IndexFunc(imgs, func(im api.Image) bool { return im.Name == "blank" })
	if i < 0 {
		t.Fatalf("image list has no blank: %+v", imgs)
	}
	base := filepath.Join(d.dataDir, "images", imgs[i].Digest+".qcow2")
	if err := os.Remove(base); err != nil {
		t.Fatalf("remove base image: %v", err)
	}

	r := d.labvm("create", "doomed", "--image", "blank", "--size", "Standard_B1s")
	// The failure must be the missing base, not any failure on the way.
	if r.code == 0 || !strings.Contains(r.stderr, "Error: ") || !strings.Contains(r.stderr, "backing file") {
		t.Fatalf("create without a base image: exit %d, want an error about the backing file\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	var inst api.Instance
	d.jsonOut(&inst, "show", "doomed")
	if inst.State != api.StateCreateFailed || inst.StateReason == "" {
		t.Fatalf("state = %s (%q), want CreateFailed with a reason", inst.State, inst.StateReason)
	}
	if dirs := d.instanceDirs(); len(dirs) != 0 {
		t.Fatalf("files left by the failed create: %v", dirs)
	}
	if doms := d.domains(); len(doms) != 0 {
		t.Fatalf("domains left by the failed create: %v", doms)
	}
	d.mustFail(string(api.StateCreateFailed), "start", "doomed")
	d.must("delete", "doomed", "--yes")
	d.mustFail("not found", "show", "doomed")
}
