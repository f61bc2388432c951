package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/vm"
	bolt "go.etcd.io/bbolt"
)

// TestStaleRecordWriteCannotUndoPolicy: an operation writes back the copy
// of the record it read when it began; a policy set meanwhile survives,
// because the policy is not part of what PutInstance writes: whatever
// policy the stale copy carries, raised, cleared or changed. Every read
// (the record, the listing in a write transaction, the cache, a reopened
// store) sees the record joined with the policy as set.
func TestStaleRecordWriteCannotUndoPolicy(t *testing.T) {
	for _, tt := range []struct {
		name         string
		stale, set   time.Duration
		wantInBucket bool
	}{
		{"set while none", 0, 30 * time.Minute, true},
		{"cleared", 2 * time.Hour, 0, false},
		{"changed", 2 * time.Hour, 30 * time.Minute, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "labvm.db")
			s, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = s.Close() }()
			inst := vm.Instance{ID: "aaaa", Name: "alice-dev", State: vm.StateRunning, Policy: vm.Policy{IdleShutdown: tt.stale}}
			if err := s.Update(func(tx *Tx) error { return tx.CreateInstance(inst) }); err != nil {
				t.Fatal(err)
			}
			stale := inst // the operation's copy
			var set vm.Instance
			if err := s.Update(func(tx *Tx) error {
				set, err = tx.SetPolicy(inst.ID, vm.Policy{IdleShutdown: tt.set})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if set.Policy.IdleShutdown != tt.set || set.State != vm.StateRunning {
				t.Fatalf("SetPolicy returned %s, %s; want Running, %s", set.State, set.Policy.IdleShutdown, tt.set)
			}
			stale.SetState(vm.StateStopped, "stopped", time.Now().UTC())
			if err := s.Update(func(tx *Tx) error { return tx.PutInstance(stale) }); err != nil {
				t.Fatal(err)
			}
			check := func(s *Store, what string) {
				t.Helper()
				reads := map[string]func(tx *Tx) (vm.Instance, error){
					"Instance":       func(tx *Tx) (vm.Instance, error) { return tx.Instance(inst.ID) },
					"InstanceByName": func(tx *Tx) (vm.Instance, error) { return tx.InstanceByName(inst.Name) },
					"Instances":      func(tx *Tx) (vm.Instance, error) { l, err := tx.Instances(); return l[0], err },
				}
				for name, read := range reads {
					for _, writable := range []bool{false, true} {
						var got vm.Instance
						run := s.View
						if writable {
							run = s.Update
						}
						if err := run(func(tx *Tx) error { got, err = read(tx); return err }); err != nil {
							t.Fatal(err)
						}
						if got.State != vm.StateStopped || got.Policy.IdleShutdown != tt.set {
							t.Errorf("%s: %s (writable %v): state %s, idle shutdown %s; want Stopped, %s",
								what, name, writable, got.State, got.Policy.IdleShutdown, tt.set)
						}
					}
				}
				if snap := s.InstanceSnapshot(); len(snap) != 1 || snap[0].Policy.IdleShutdown != tt.set {
					t.Errorf("%s: InstanceSnapshot %+v, want idle shutdown %s", what, snap, tt.set)
				}
				var p vm.Policy
				if err := s.View(func(tx *Tx) error { p, err = tx.Policy(inst.ID); return err }); err != nil || p.IdleShutdown != tt.set {
					t.Errorf("%s: Policy %v, %v; want %s", what, p, err, tt.set)
				}
			}
			check(s, "after the stale write")
			assertStoredApart(t, s, inst.ID, tt.wantInBucket)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err = Open(path); err != nil { // the cache loaded anew
				t.Fatal(err)
			}
			check(s, "after reopen")
		})
	}
}

// assertStoredApart checks the layout: the instance record holds no
// policy, and bucket policies holds one for id exactly when want.
func assertStoredApart(t *testing.T, s *Store, id string, want bool) {
	t.Helper()
	if err := s.View(func(tx *Tx) error {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(tx.tx.Bucket(bucketInstances).Get([]byte(id)), &fields); err != nil {
			return err
		}
		if _, ok := fields["policy"]; ok {
			t.Errorf("the record of %s holds a policy: %s", id, fields["policy"])
		}
		if got := tx.tx.Bucket(bucketPolicies).Get([]byte(id)) != nil; got != want {
			t.Errorf("bucket policies holds %s: %v, want %v", id, got, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyGoesWithInstance: a missing instance has no policy to read or
// set, and a deleted instance's policy goes with it, so an instance made
// again with the same id does not inherit it.
func TestPolicyGoesWithInstance(t *testing.T) {
	s, _ := openTemp(t)
	for name, fn := range map[string]func(tx *Tx) error{
		"SetPolicy":   func(tx *Tx) error { _, err := tx.SetPolicy("nope", vm.Policy{IdleShutdown: time.Hour}); return err },
		"Policy":      func(tx *Tx) error { _, err := tx.Policy("nope"); return err },
		"PutInstance": func(tx *Tx) error { return tx.PutInstance(vm.Instance{ID: "nope", Name: "nope"}) },
	} {
		if err := s.Update(fn); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s of a missing instance: %v, want ErrNotFound", name, err)
		}
	}
	if err := s.View(func(tx *Tx) error {
		if n := tx.tx.Bucket(bucketPolicies).Stats().KeyN; n != 0 {
			t.Errorf("refused writes left %d policies", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	inst := vm.Instance{ID: "aaaa", Name: "alice-dev", Policy: vm.Policy{IdleShutdown: time.Hour}}
	if err := s.Update(func(tx *Tx) error { return tx.CreateInstance(inst) }); err != nil {
		t.Fatal(err)
	}
	assertStoredApart(t, s, inst.ID, true)
	if err := s.Update(func(tx *Tx) error { return tx.DeleteInstance(inst.ID) }); err != nil {
		t.Fatal(err)
	}
	if err := s.View(func(tx *Tx) error {
		if tx.tx.Bucket(bucketPolicies).Get([]byte(inst.ID)) != nil {
			t.Error("the deleted instance's policy is still stored")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	again := vm.Instance{ID: inst.ID, Name: "alice-dev"}
	if err := s.Update(func(tx *Tx) error { return tx.CreateInstance(again) }); err != nil {
		t.Fatal(err)
	}
	var got vm.Instance
	if err := s.View(func(tx *Tx) error { var err error; got, err = tx.Instance(inst.ID); return err }); err != nil || got.Policy != (vm.Policy{}) {
		t.Fatalf("made again: policy %v, %v; want none", got.Policy, err)
	}
}

// TestMigratePoliciesOutOfRecords: a database written in the schema 6
// layout (the policy inside the instance JSON, always present, "{}" when
// zero; no bucket policies) opened by this code has every policy moved to
// bucket policies and the records keep every other field; a second run
// of the migration changes nothing; a record it cannot read stops the
// migration with nothing changed.
func TestMigratePoliciesOutOfRecords(t *testing.T) {
	created := time.Date(2026, 11, 29, 19, 0, 0, 0, time.UTC)
	old := map[string]string{ // as labvmd of schema 6 wrote them
		"aaaa": `{"id":"aaaa","name":"alice-dev","size":{"name":"Standard_B1s","family":"B","vcpus":1,"memory_mib":1024},"vnet":"default","state":"Running","created_at":"2026-11-29T19:00:00Z","policy":{"idle_shutdown":1800000000000}}`,
		"bbbb": `{"id":"bbbb","name":"bob-dev","state":"Stopped","created_at":"2026-11-29T19:00:00Z","policy":{}}`,
		"cccc": `{"id":"cccc","name":"carol-dev","state":"Stopped","created_at":"2026-11-29T19:00:00Z"}`,
	}
	wantIdle := map[string]time.Duration{"aaaa": 30 * time.Minute}
	writeOld := func(t *testing.T, records map[string]string) string {
		t.Helper()
		s, path := openTemp(t)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = db.Close() }()
		if err := db.Update(func(tx *bolt.Tx) error {
			if err := tx.DeleteBucket(bucketPolicies); err != nil {
				return err
			}
			for id, raw := range records {
				var inst struct{ Name string }
				if err := json.Unmarshal([]byte(raw), &inst); err == nil {
					if err := tx.Bucket(bucketNames).Put([]byte(inst.Name), []byte(id)); err != nil {
						return err
					}
				}
				if err := tx.Bucket(bucketInstances).Put([]byte(id), []byte(raw)); err != nil {
					return err
				}
			}
			return tx.Bucket(bucketMeta).Put(keySchema, []byte("6"))
		}); err != nil {
			t.Fatal(err)
		}
		return path
	}
	dump := func(t *testing.T, path string) (schema string, instances, policies map[string]string) {
		t.Helper()
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = db.Close() }()
		instances, policies = map[string]string{}, map[string]string{}
		if err := db.View(func(tx *bolt.Tx) error {
			schema = string(tx.Bucket(bucketMeta).Get(keySchema))
			if err := tx.Bucket(bucketInstances).ForEach(func(k, v []byte) error { instances[string(k)] = string(v); return nil }); err != nil {
				return err
			}
			if b := tx.Bucket(bucketPolicies); b != nil {
				return b.ForEach(func(k, v []byte) error { policies[string(k)] = string(v); return nil })
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return schema, instances, policies
	}

	t.Run("moved", func(t *testing.T) {
		path := writeOld(t, old)
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		var list []vm.Instance
		if err := s.View(func(tx *Tx) error { list, err = tx.Instances(); return err }); err != nil {
			t.Fatal(err)
		}
		if len(list) != 3 {
			t.Fatalf("instances after the migration: %+v", list)
		}
		for _, inst := range list {
			var fromRecord vm.Instance
			if err := s.View(func(tx *Tx) error { fromRecord, err = tx.Instance(inst.ID); return err }); err != nil {
				t.Fatal(err)
			}
			for what, got := range map[string]vm.Instance{"cache": inst, "record": fromRecord} {
				if got.Policy.IdleShutdown != wantIdle[inst.ID] {
					t.Errorf("%s from the %s: idle shutdown %s, want %s", inst.Name, what, got.Policy.IdleShutdown, wantIdle[inst.ID])
				}
				if !got.CreatedAt.Equal(created) || got.State == vm.StateUnknown {
					t.Errorf("%s from the %s lost fields: %+v", inst.Name, what, got)
				}
			}
		}
		if list[0].Size.Name != "Standard_B1s" || list[0].Size.VCPUs != 1 || list[0].VNet != "default" {
			t.Errorf("alice-dev lost fields: %+v", list[0])
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		schema, records, policies := dump(t, path)
		if schema != "7" {
			t.Errorf("schema %s after the migration, want 7", schema)
		}
		if len(policies) != 1 || policies["aaaa"] == "" {
			t.Errorf("bucket policies: %v, want aaaa's only", policies)
		}
		for id, raw := range records {
			var got, was map[string]json.RawMessage
			if err := json.Unmarshal([]byte(raw), &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(old[id]), &was); err != nil {
				t.Fatal(err)
			}
			delete(was, "policy")
			if len(got) != len(was) {
				t.Errorf("record %s: %s, want the old one without its policy: %v", id, raw, was)
			}
			for k, v := range was {
				if !bytes.Equal(got[k], v) {
					t.Errorf("record %s: %s is %s, was %s", id, k, got[k], v)
				}
			}
		}

		t.Log("a second run of the migration changes nothing")
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(movePolicies); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		schema2, records2, policies2 := dump(t, path)
		if schema2 != schema || !maps.Equal(records2, records) || !maps.Equal(policies2, policies) {
			t.Errorf("second run changed the database:\n%v %v\nwas\n%v %v", records2, policies2, records, policies)
		}
	})

	t.Run("unreadable record changes nothing", func(t *testing.T) {
		bad := map[string]string{"dddd": `{"id":"dddd","name":"dave-dev","policy":{"idle_shutdown":"soon"}}`}
		for id, raw := range old {
			bad[id] = raw
		}
		path := writeOld(t, bad)
		_, before, _ := dump(t, path)
		if s, err := Open(path); err == nil {
			_ = s.Close()
			t.Fatal("a record with an unreadable policy was migrated")
		} else if !strings.Contains(err.Error(), "dddd") {
			t.Errorf("the error does not name the record: %v", err)
		}
		schema, after, policies := dump(t, path)
		if schema != "6" || !maps.Equal(after, before) || len(policies) != 0 {
			t.Errorf("a failed migration changed the database: schema %s, policies %v, records changed: %v", schema, policies, !maps.Equal(after, before))
		}
	})
}
