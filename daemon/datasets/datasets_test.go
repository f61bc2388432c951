package datasets

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/storage/dataset"
	"github.com/labvm/labvm/vm"
)

func newEngine(t *testing.T) (*Engine, string) {
	t.Helper()
	root := t.TempDir()
	data := filepath.Join(root, "data")
	if err := os.MkdirAll(data, 0o711); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(data, "labvm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return New(data, "", st, slog.New(slog.DiscardHandler)), root
}

func mkdir(t *testing.T, p string) string {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAdd(t *testing.T) {
	e, root := newEngine(t)
	imagenet := mkdir(t, filepath.Join(root, "srv", "imagenet"))
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Add("root", api.AddDatasetRequest{Name: "imagenet", Path: imagenet}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what string
		req  api.AddDatasetRequest
		code api.Code
		msg  string
	}{
		{"taken name", api.AddDatasetRequest{Name: "imagenet", Path: imagenet}, api.CodeAlreadyExists, "already exists"},
		{"bad name", api.AddDatasetRequest{Name: "../x", Path: imagenet}, api.CodeInvalidArgument, "invalid dataset name"},
		{"relative path", api.AddDatasetRequest{Name: "rel", Path: "srv/imagenet"}, api.CodeInvalidArgument, "absolute"},
		{"missing directory", api.AddDatasetRequest{Name: "gone", Path: filepath.Join(root, "gone")}, api.CodeInvalidArgument, "no such file"},
		{"a file", api.AddDatasetRequest{Name: "file", Path: file}, api.CodeInvalidArgument, "not a directory"},
		{"the data dir", api.AddDatasetRequest{Name: "data", Path: e.dataDir}, api.CodeInvalidArgument, "data dir"},
		{"above the data dir", api.AddDatasetRequest{Name: "above", Path: root}, api.CodeInvalidArgument, "data dir"},
	} {
		_, err := e.Add("root", tc.req)
		if got := errdefs.Code(err); got != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: Add = %v (%s), want %s mentioning %q", tc.what, err, got, tc.code, tc.msg)
		}
	}
	list, err := e.List()
	if err != nil || len(list) != 1 || list[0].Name != "imagenet" || list[0].Path != imagenet || list[0].CreatedBy != "root" {
		t.Fatalf("List = %+v, %v", list, err)
	}
}

func TestRemoveRefusedInUse(t *testing.T) {
	e, root := newEngine(t)
	for _, n := range []string{"imagenet", "coco", "unused"} {
		if _, err := e.Add("root", api.AddDatasetRequest{Name: n, Path: mkdir(t, filepath.Join(root, n))}); err != nil {
			t.Fatal(err)
		}
	}
	for _, inst := range []vm.Instance{
		{ID: "0000000000000001", Name: "bob-dev", State: vm.StateStopped, Datasets: []string{"imagenet", "coco"}},
		{ID: "0000000000000002", Name: "alice-dev", State: vm.StateRunning, Datasets: []string{"imagenet"}},
		{ID: "0000000000000003", Name: "carol-dev", State: vm.StateCreateFailed, Datasets: []string{"coco"}},
	} {
		if err := e.store.Update(func(tx *store.Tx) error { return tx.CreateInstance(inst) }); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		code api.Code
		msg  string
	}{
		{"imagenet", api.CodeConflict, "in use by 2 instance(s): alice-dev, bob-dev"},
		{"coco", api.CodeConflict, "in use by 2 instance(s): bob-dev, carol-dev"},
		{"nope", api.CodeNotFound, `dataset "nope" not found`},
		{"unused", "", ""},
	} {
		err := e.Remove(tc.name)
		if tc.code == "" {
			if err != nil {
				t.Errorf("Remove(%s) = %v", tc.name, err)
			}
			continue
		}
		if got := errdefs.Code(err); got != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Remove(%s) = %v (%s), want %s mentioning %q", tc.name, err, got, tc.code, tc.msg)
		}
	}
	list, err := e.List()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range list {
		names = append(names, d.Name)
		if d.Name == "imagenet" && !slices.Equal(d.UsedBy, []string{"alice-dev", "bob-dev"}) {
			t.Errorf("imagenet used by %v", d.UsedBy)
		}
	}
	if !slices.Equal(names, []string{"coco", "imagenet"}) {
		t.Errorf("after the removals: %v", names)
	}
}

func TestCheck(t *testing.T) {
	e, root := newEngine(t)
	gone := mkdir(t, filepath.Join(root, "gone"))
	for n, p := range map[string]string{"imagenet": mkdir(t, filepath.Join(root, "imagenet")), "gone": gone} {
		if _, err := e.Add("root", api.AddDatasetRequest{Name: n, Path: p}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	many := make([]string, MaxPerInstance+1)
	for i := range many {
		many[i] = "imagenet"
	}
	for _, tc := range []struct {
		what  string
		names []string
		code  api.Code
		msg   string
	}{
		{"none", nil, "", ""},
		{"declared", []string{"imagenet"}, "", ""},
		{"unknown", []string{"imagenet", "nope"}, api.CodeInvalidArgument, `unknown dataset "nope"`},
		{"twice", []string{"imagenet", "imagenet"}, api.CodeInvalidArgument, "given twice"},
		{"too many", many, api.CodeInvalidArgument, "at most 8"},
		{"directory gone", []string{"gone"}, api.CodeConflict, "dataset directory missing"},
	} {
		err := e.store.View(func(tx *store.Tx) error { return e.Check(tx, tc.names) })
		if tc.code == "" {
			if err != nil {
				t.Errorf("%s: Check = %v", tc.what, err)
			}
			continue
		}
		if got := errdefs.Code(err); got != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: Check = %v (%s), want %s mentioning %q", tc.what, err, got, tc.code, tc.msg)
		}
	}
}

// TestAttachMissingLeavesNothing: an instance whose second dataset's
// directory is gone gets an error naming it, and the first one's mount
// is undone.
func TestAttachMissingLeavesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounts need root")
	}
	e, root := newEngine(t)
	gone := mkdir(t, filepath.Join(root, "gone"))
	for n, p := range map[string]string{"imagenet": mkdir(t, filepath.Join(root, "imagenet")), "gone": gone} {
		if _, err := e.Add("root", api.AddDatasetRequest{Name: n, Path: p}); err != nil {
			t.Fatal(err)
		}
	}
	inst := vm.Instance{ID: "00000000000000aa", Name: "bob-dev", Datasets: []string{"imagenet", "gone"}}
	t.Cleanup(func() { e.Detach(inst) })
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	_, err := e.Attach(inst)
	if !errors.Is(err, dataset.ErrSourceMissing) || !strings.Contains(err.Error(), gone) || errdefs.Code(err) != api.CodeConflict {
		t.Fatalf("Attach = %v, want ErrSourceMissing naming %s", err, gone)
	}
	if ids, _ := e.Mounts().Instances(); len(ids) != 0 {
		t.Errorf("a failed attach left mounts: %v", ids)
	}
	if err := os.Mkdir(gone, 0o755); err != nil {
		t.Fatal(err)
	}
	shares, err := e.Attach(inst)
	if err != nil || len(shares) != 2 || shares[0].Tag != "imagenet" || shares[1].Source != e.Mounts().Path(inst.ID, "gone") {
		t.Fatalf("Attach = %+v, %v", shares, err)
	}
	e.Reconcile(map[string]bool{inst.ID: true})
	if ids, _ := e.Mounts().Instances(); !slices.Equal(ids, []string{inst.ID}) {
		t.Errorf("reconcile released a running instance's mounts: %v", ids)
	}
	e.Reconcile(nil)
	if ids, _ := e.Mounts().Instances(); len(ids) != 0 {
		t.Errorf("reconcile left mounts: %v", ids)
	}
}

// TestAttachUndeclared: an instance rebuilt from its manifest may name a
// dataset the store no longer has; its start says which, and how to fix it.
func TestAttachUndeclared(t *testing.T) {
	e, _ := newEngine(t)
	_, err := e.Attach(vm.Instance{ID: "00000000000000bb", Name: "bob-dev", Datasets: []string{"imagenet"}})
	if errdefs.Code(err) != api.CodeNotFound || !strings.Contains(err.Error(), `dataset "imagenet" is not declared`) ||
		!strings.Contains(errdefs.ToAPI(err).Hint, "labvm dataset add imagenet") {
		t.Fatalf("Attach = %v (%+v)", err, errdefs.ToAPI(err))
	}
	if shares, err := e.Attach(vm.Instance{ID: "00000000000000cc", Name: "plain"}); err != nil || shares != nil {
		t.Fatalf("Attach without datasets = %v, %v", shares, err)
	}
}
