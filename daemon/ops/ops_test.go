package ops

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
)

func TestOfInstance(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	created := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return created.Add(d) }
	stored := []store.Operation{
		// An earlier instance of the same name, recorded with its id.
		{ID: "old-id", Kind: string(api.OpDelete), Target: "web", InstanceID: "i-old", Status: StatusSucceeded, CreatedAt: at(-time.Hour)},
		// An earlier one recorded before ids were kept.
		{ID: "old-legacy", Kind: string(api.OpStop), Target: "web", Status: StatusSucceeded, CreatedAt: at(-time.Second)},
		{ID: "create", Kind: string(api.OpCreate), Target: "web", InstanceID: "i-new", Status: StatusSucceeded, CreatedAt: at(time.Millisecond)},
		// An image of the same name is not the instance.
		{ID: "image", Kind: string(api.OpImageImport), Target: "web", Status: StatusSucceeded, CreatedAt: at(time.Minute)},
		{ID: "other", Kind: string(api.OpStart), Target: "db", InstanceID: "i-db", Status: StatusSucceeded, CreatedAt: at(2 * time.Minute)},
		{ID: "legacy-stop", Kind: string(api.OpStop), Target: "web", Status: StatusSucceeded, CreatedAt: at(3 * time.Minute)},
		{ID: "start", Kind: string(api.OpStart), Target: "web", InstanceID: "i-new", Status: StatusRunning, CreatedAt: at(4 * time.Minute)},
		// A record with the id but another name (none today) still counts by id.
		{ID: "by-id", Kind: string(api.OpRestart), Target: "renamed", InstanceID: "i-new", Status: StatusSucceeded, CreatedAt: at(5 * time.Minute)},
	}
	if err := st.Update(func(tx *store.Tx) error {
		for _, op := range stored {
			if err := tx.PutOperation(op); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e := New(Options{Store: st})
	for _, tc := range []struct {
		id, name string
		want     []string
	}{
		{"i-new", "web", []string{"create", "legacy-stop", "start", "by-id"}},
		{"i-db", "db", []string{"other"}},
		{"i-gone", "nothing", nil},
	} {
		got, err := e.OfInstance(tc.id, tc.name, created)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, op := range got {
			ids = append(ids, op.ID)
		}
		if !slices.Equal(ids, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, ids, tc.want)
		}
	}
}
