package store

import (
	"errors"
	"strings"
	"testing"

	"github.com/labvm/labvm/vm"
)

// TestInstanceCacheFollowsCommits: read-only listings come from the
// cache, which sees committed writes, never rolled-back ones, and agrees
// with the records after a reopen.
func TestInstanceCacheFollowsCommits(t *testing.T) {
	s, path := openTemp(t)
	names := func(s *Store) string {
		t.Helper()
		var out []string
		if err := s.View(func(tx *Tx) error {
			list, err := tx.Instances()
			for _, inst := range list {
				out = append(out, inst.Name+"="+inst.State.String())
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return strings.Join(out, ",")
	}
	a := vm.Instance{ID: "aaaaaaaaaaaaaaaa", Name: "bravo", State: vm.StateCreating}
	b := vm.Instance{ID: "bbbbbbbbbbbbbbbb", Name: "alpha", State: vm.StateCreating}
	if err := s.Update(func(tx *Tx) error {
		if err := tx.CreateInstance(a); err != nil {
			return err
		}
		return tx.CreateInstance(b)
	}); err != nil {
		t.Fatal(err)
	}
	if got := names(s); got != "alpha=Creating,bravo=Creating" {
		t.Fatalf("after create: %s", got)
	}
	boom := errors.New("boom")
	if err := s.Update(func(tx *Tx) error {
		a.State = vm.StateRunning
		if err := tx.PutInstance(a); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("update: %v", err)
	}
	if got := names(s); got != "alpha=Creating,bravo=Creating" {
		t.Fatalf("a rolled-back write reached the cache: %s", got)
	}
	if err := s.Update(func(tx *Tx) error {
		a.State = vm.StateRunning
		if err := tx.PutInstance(a); err != nil {
			return err
		}
		return tx.DeleteInstance(b.ID)
	}); err != nil {
		t.Fatal(err)
	}
	if got := names(s); got != "bravo=Running" {
		t.Fatalf("after put and delete: %s", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Close() })
	if got := names(again); got != "bravo=Running" {
		t.Fatalf("after reopen: %s", got)
	}
}

// TestOnInstanceChange: the hook hears creates, state changes and
// deletes once committed, in order; not rolled-back writes, not writes
// that keep the state.
func TestOnInstanceChange(t *testing.T) {
	s, _ := openTemp(t)
	var got []string
	s.OnInstanceChange(func(c InstanceChange) {
		from, to := "-", "-"
		if c.Old != nil {
			from = c.Old.Name + ":" + c.Old.State.String()
		}
		if c.New != nil {
			to = c.New.Name + ":" + c.New.State.String()
		}
		got = append(got, from+">"+to)
	})
	a := vm.Instance{ID: "aaaaaaaaaaaaaaaa", Name: "web", State: vm.StateCreating}
	update := func(fn func(tx *Tx) error) error { return s.Update(fn) }
	steps := []struct {
		name string
		fn   func(tx *Tx) error
		err  bool
	}{
		{"create", func(tx *Tx) error { return tx.CreateInstance(a) }, false},
		{"same state", func(tx *Tx) error { a.StateReason = "x"; return tx.PutInstance(a) }, false},
		{"rolled back", func(tx *Tx) error {
			b := a
			b.State = vm.StateCreateFailed
			if err := tx.PutInstance(b); err != nil {
				return err
			}
			return errors.New("boom")
		}, true},
		{"two states in one commit", func(tx *Tx) error {
			a.State = vm.StateSettingUp
			if err := tx.PutInstance(a); err != nil {
				return err
			}
			a.State = vm.StateRunning
			return tx.PutInstance(a)
		}, false},
		{"delete", func(tx *Tx) error { return tx.DeleteInstance(a.ID) }, false},
	}
	for _, st := range steps {
		if err := update(st.fn); (err != nil) != st.err {
			t.Fatalf("%s: %v", st.name, err)
		}
	}
	want := "->web:Creating,web:Creating>web:SettingUp,web:SettingUp>web:Running,web:Running>-"
	if strings.Join(got, ",") != want {
		t.Fatalf("changes heard:\n got %s\nwant %s", strings.Join(got, ","), want)
	}
}

// TestInstanceSnapshot: the shared snapshot is ordered by name, follows
// commits, and a snapshot taken earlier is left as it was by later
// commits (its readers may still be encoding it).
func TestInstanceSnapshot(t *testing.T) {
	s, _ := openTemp(t)
	names := func(list []*vm.Instance) string {
		var out []string
		for _, inst := range list {
			out = append(out, inst.Name+"="+inst.State.String())
		}
		return strings.Join(out, ",")
	}
	if got := s.InstanceSnapshot(); len(got) != 0 {
		t.Fatalf("empty store: %d instances", len(got))
	}
	a := vm.Instance{ID: "aaaaaaaaaaaaaaaa", Name: "charlie", State: vm.StateCreating}
	b := vm.Instance{ID: "bbbbbbbbbbbbbbbb", Name: "alpha", State: vm.StateCreating}
	c := vm.Instance{ID: "cccccccccccccccc", Name: "bravo", State: vm.StateCreating}
	if err := s.Update(func(tx *Tx) error {
		for _, inst := range []vm.Instance{a, b, c} {
			if err := tx.CreateInstance(inst); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	first := s.InstanceSnapshot()
	if got := names(first); got != "alpha=Creating,bravo=Creating,charlie=Creating" {
		t.Fatalf("snapshot: %s", got)
	}
	if again := s.InstanceSnapshot(); &again[0] != &first[0] {
		t.Fatal("a second snapshot without a commit in between was rebuilt")
	}
	a.State = vm.StateRunning
	if err := s.Update(func(tx *Tx) error {
		if err := tx.PutInstance(a); err != nil {
			return err
		}
		return tx.DeleteInstance(b.ID)
	}); err != nil {
		t.Fatal(err)
	}
	if got := names(s.InstanceSnapshot()); got != "bravo=Creating,charlie=Running" {
		t.Fatalf("after put and delete: %s", got)
	}
	if got := names(first); got != "alpha=Creating,bravo=Creating,charlie=Creating" {
		t.Fatalf("an earlier snapshot changed under its reader: %s", got)
	}
}
