// Package store keeps labvmd's state in bbolt: instances (each record
// and, apart, its user's policy), images, operations and IP allocations,
// under a schema version with migrations.
// It is the source of truth for desired state; nothing about an instance
// lives only in memory.
package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/labvm/labvm/vm"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout this code reads and writes. Open migrates
// older databases forward and refuses newer ones.
const SchemaVersion = 7

var (
	bucketMeta       = []byte("meta")
	bucketInstances  = []byte("instances")
	bucketNames      = []byte("instance_names")
	bucketImages     = []byte("images")
	bucketOperations = []byte("operations")
	bucketIPs        = []byte("ip_allocations")
	bucketRoles      = []byte("roles")
	bucketQuota      = []byte("quota")
	bucketAudit      = []byte("audit")
	bucketVNets      = []byte("vnets")
	bucketJobs       = []byte("jobs")
	bucketIPHints    = []byte("ip_hints")
	bucketDatasets   = []byte("datasets")
	bucketSchedules  = []byte("schedules")
	// bucketPolicies holds each instance's policy by instance id, apart
	// from its record (see records.go).
	bucketPolicies = []byte("policies")

	keySchema = []byte("schema_version")
)

// ErrNotFound is returned when a record does not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when creating a record whose key is taken.
var ErrExists = errors.New("already exists")

// Store is an open database.
type Store struct {
	db *bolt.DB

	// instances holds every instance record decoded, so reads that list
	// them (labvm list, quota views, status) do not decode the bucket
	// each time. Loaded at Open; changed only by committed transactions.
	instances instanceCache

	// Group commit (see Update): gmu guards queue and leading.
	gmu     sync.Mutex
	queue   []*updateCall
	leading bool
}

type updateCall struct {
	fn   func(tx *Tx) error
	done chan error    // the call's outcome
	lead chan struct{} // this call's goroutine must commit the queue
	// panicked is what fn panicked with, re-raised in the caller.
	panicked any
}

// Open opens (creating if needed) the database at path. The timeout makes
// a second daemon on the same data dir fail fast instead of hanging on
// bbolt's file lock.
func Open(path string) (_ *Store, err error) {
	defer recoverCorrupt(path, &err)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open state %s: locked by another process (is another labvmd running on this data dir?)", path)
		}
		return nil, corrupt(path, err)
	}
	if err := verify(db); err != nil {
		// The verify error is the one to report; nothing was written.
		_ = db.Close()
		return nil, corrupt(path, err)
	}
	s := &Store{db: db}
	if err := s.migrate(); err != nil {
		// The migrate error is the one to report; its one transaction
		// rolled back, so Close loses nothing.
		_ = db.Close()
		return nil, err
	}
	if err := s.loadInstances(); err != nil {
		_ = db.Close() // the load error is the one to report
		return nil, corrupt(path, err)
	}
	return s, nil
}

// migrations[i] upgrades schema version i to i+1.
var migrations = []func(tx *bolt.Tx) error{
	0: func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketInstances, bucketNames, bucketImages, bucketOperations, bucketIPs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	1: func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRoles, bucketQuota, bucketAudit} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	2: func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketVNets)
		return err
	},
	3: func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketJobs)
		return err
	},
	// 4→5: where each VNet's next address search starts, so a create
	// does not scan every allocation.
	4: func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketIPHints)
		return err
	},
	// 5→6: host directories shared read-only with instances (datasets)
	// and start/stop schedules.
	5: func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketDatasets, bucketSchedules} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// 6→7: each instance's policy moves out of its record into bucket
	// policies, so writing the record cannot write the policy.
	6: movePolicies,
}

// movePolicies takes the "policy" out of every instance record that has
// one and stores it, when not zero, in bucket policies. Every other field
// of the record is kept as it was. It runs in migrate's one transaction
// (all records move or none), and running it again changes nothing: no
// record has a policy left to move.
func movePolicies(tx *bolt.Tx) error {
	policies, err := tx.CreateBucketIfNotExists(bucketPolicies)
	if err != nil {
		return err
	}
	instances := tx.Bucket(bucketInstances)
	type move struct{ id, record, policy []byte }
	var moves []move
	// bbolt forbids writing a bucket during its ForEach: collect first.
	err = instances.ForEach(func(id, raw []byte) error {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw, &fields); err != nil {
			return fmt.Errorf("decode %s/%s: %w", bucketInstances, id, err)
		}
		old, ok := fields["policy"]
		if !ok {
			return nil
		}
		var p vm.Policy
		if err := json.Unmarshal(old, &p); err != nil {
			return fmt.Errorf("decode the policy in %s/%s: %w", bucketInstances, id, err)
		}
		delete(fields, "policy")
		m := move{id: bytes.Clone(id)}
		if m.record, err = json.Marshal(fields); err != nil {
			return err
		}
		if p != (vm.Policy{}) {
			if m.policy, err = json.Marshal(p); err != nil {
				return err
			}
		}
		moves = append(moves, m)
		return nil
	})
	if err != nil {
		return err
	}
	for _, m := range moves {
		if err := instances.Put(m.id, m.record); err != nil {
			return err
		}
		if m.policy == nil {
			continue
		}
		if err := policies.Put(m.id, m.policy); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) migrate() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		v := 0
		if raw := meta.Get(keySchema); raw != nil {
			if err := json.Unmarshal(raw, &v); err != nil {
				return fmt.Errorf("read schema version: %w", err)
			}
		}
		if v > SchemaVersion {
			return fmt.Errorf("state schema version %d is newer than this labvmd understands (%d); upgrade labvmd", v, SchemaVersion)
		}
		for ; v < SchemaVersion; v++ {
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("migrate state schema %d→%d: %w", v, v+1, err)
			}
		}
		raw, _ := json.Marshal(v)
		return meta.Put(keySchema, raw)
	})
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Path is the database file.
func (s *Store) Path() string { return s.db.Path() }

// Size is the database's size in bytes as of now.
func (s *Store) Size() (int64, error) {
	var n int64
	err := s.db.View(func(btx *bolt.Tx) error {
		n = btx.Size()
		return nil
	})
	return n, err
}

// Update runs fn in a read-write transaction; all of fn's writes land
// together or not at all.
//
// Concurrent calls are group-committed: a call that arrives while a commit
// is in flight queues, and the next commit runs every queued call, in
// arrival order, in one transaction, so N concurrent writers pay about one
// fsync instead of N each after the other. A call alone commits at once.
// A call that fails never has its writes land: the group is rolled back,
// the failed call runs again alone (its outcome is then its own) and the
// others are retried together. fn may therefore run more than once; it
// must not have effects outside tx that a second run would repeat.
func (s *Store) Update(fn func(tx *Tx) error) error {
	c := &updateCall{fn: fn, done: make(chan error, 1), lead: make(chan struct{}, 1)}
	s.gmu.Lock()
	s.queue = append(s.queue, c)
	if !s.leading {
		s.leading = true
		c.lead <- struct{}{}
	}
	s.gmu.Unlock()
	for {
		select {
		case err := <-c.done:
			if c.panicked != nil {
				panic(c.panicked)
			}
			return err
		case <-c.lead:
			s.commitQueue()
		}
	}
}

// commitQueue commits everything queued, then hands the lead to the first
// call queued meanwhile, so no caller keeps committing for others.
func (s *Store) commitQueue() {
	s.gmu.Lock()
	calls := s.queue
	s.queue = nil
	s.gmu.Unlock()
	s.commitGroup(calls)
	s.gmu.Lock()
	if len(s.queue) > 0 {
		s.queue[0].lead <- struct{}{}
	} else {
		s.leading = false
	}
	s.gmu.Unlock()
}

func (s *Store) commitGroup(calls []*updateCall) {
	for len(calls) > 0 {
		failed := -1
		err := s.db.Update(func(btx *bolt.Tx) error {
			tx := &Tx{tx: btx, cache: &s.instances}
			for i, c := range calls {
				if err := c.run(tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			// Committed, or the commit itself failed: the same for all.
			for _, c := range calls {
				c.done <- err
			}
			return
		}
		f := calls[failed]
		if len(calls) == 1 {
			f.done <- err
			return
		}
		f.panicked = nil
		f.done <- s.db.Update(func(btx *bolt.Tx) error { return f.run(&Tx{tx: btx, cache: &s.instances}) })
		calls = append(calls[:failed:failed], calls[failed+1:]...)
	}
}

// run calls fn, turning a panic into an error that rolls the group back;
// Update re-raises it in the caller's goroutine.
func (c *updateCall) run(tx *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			c.panicked = p
			err = fmt.Errorf("panic in store update: %v", p)
		}
	}()
	return c.fn(tx)
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(tx *Tx) error) error {
	return s.db.View(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx, cache: &s.instances}) })
}

// Tx is a transaction with typed accessors.
type Tx struct {
	tx *bolt.Tx
	// cache is the store's decoded instances: written through on commit
	// by write transactions, read by read-only ones.
	cache *instanceCache
}

func get[T any](tx *Tx, bucket, key []byte) (T, error) {
	var v T
	raw := tx.tx.Bucket(bucket).Get(key)
	if raw == nil {
		return v, ErrNotFound
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("decode %s/%s: %w", bucket, key, err)
	}
	return v, nil
}

func put(tx *Tx, bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", bucket, key, err)
	}
	return tx.tx.Bucket(bucket).Put(key, raw)
}

func list[T any](tx *Tx, bucket []byte) ([]T, error) {
	var out []T
	err := tx.tx.Bucket(bucket).ForEach(func(k, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decode %s/%s: %w", bucket, k, err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}
