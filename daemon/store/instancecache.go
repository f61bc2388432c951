package store

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/labvm/labvm/vm"
	bolt "go.etcd.io/bbolt"
)

// instanceCache is every instance record, decoded. Decoding 10,000 JSON
// records for each `labvm list` cost most of its time and left most of
// the daemon's garbage; records change only through write transactions,
// which update the cache when (and only if) they commit.
//
// Records are held by pointer and never changed in place: a commit
// replaces the pointer. So the name-ordered slice of them can be shared
// by every reader until the next commit, and a listing neither copies
// nor sorts 10,000 records.
type instanceCache struct {
	mu   sync.RWMutex
	byID map[string]*vm.Instance
	// sorted is byID ordered by name, built by the first reader after a
	// change (nil until then; built, it is never nil, even when empty);
	// shared, never modified once built.
	sorted []*vm.Instance
	// onChange, when set, is told of each committed change of an
	// instance's state (see OnInstanceChange).
	onChange func(InstanceChange)
}

// InstanceChange is an instance record's state changing in a committed
// transaction: Old is nil when it was created, New nil when it was
// deleted.
type InstanceChange struct {
	Old, New *vm.Instance
	// At is when the change committed.
	At time.Time
}

// OnInstanceChange has fn told, after each commit, of every instance
// record created, deleted or written with another state, in commit order.
// Writes that leave the state as it was (a changed address, a note) are
// not changes here. fn runs in the committing goroutine after bbolt has
// released its lock, and must not block: the next commit waits for it.
// Set it once, before the store is shared.
func (s *Store) OnInstanceChange(fn func(InstanceChange)) {
	s.instances.mu.Lock()
	defer s.instances.mu.Unlock()
	s.instances.onChange = fn
}

// loadInstances fills the cache from the database; Open calls it before
// anyone else can use the store.
func (s *Store) loadInstances() error {
	return s.db.View(func(btx *bolt.Tx) error {
		list, err := (&Tx{tx: btx}).decodeInstances()
		if err != nil {
			return err
		}
		s.instances.byID = make(map[string]*vm.Instance, len(list))
		for i := range list {
			s.instances.byID[list[i].ID] = &list[i]
		}
		s.instances.sorted = nil
		return nil
	})
}

// snapshot returns every instance ordered by name, as of the latest
// commit. The slice and the records are shared: read-only.
func (c *instanceCache) snapshot() []*vm.Instance {
	c.mu.RLock()
	if c.sorted != nil {
		defer c.mu.RUnlock()
		return c.sorted
	}
	c.mu.RUnlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sorted == nil {
		sorted := make([]*vm.Instance, 0, len(c.byID))
		for _, inst := range c.byID {
			sorted = append(sorted, inst)
		}
		slices.SortFunc(sorted, func(a, b *vm.Instance) int { return strings.Compare(a.Name, b.Name) })
		c.sorted = sorted
	}
	return c.sorted
}

// list returns a copy of every instance ordered by name.
func (c *instanceCache) list() []vm.Instance {
	shared := c.snapshot()
	out := make([]vm.Instance, len(shared))
	for i, inst := range shared {
		out[i] = *inst
	}
	return out
}

// cachePut records inst in the cache once the transaction commits.
func (t *Tx) cachePut(inst vm.Instance) {
	if t.cache == nil {
		return
	}
	c := t.cache
	t.tx.OnCommit(func() {
		c.mu.Lock()
		if c.byID == nil {
			c.byID = map[string]*vm.Instance{}
		}
		old, had := c.byID[inst.ID]
		c.byID[inst.ID] = &inst
		c.sorted = nil
		notify := c.onChange
		c.mu.Unlock()
		switch {
		case notify == nil:
		case !had:
			notify(InstanceChange{New: &inst, At: time.Now().UTC()})
		case old.State != inst.State:
			notify(InstanceChange{Old: old, New: &inst, At: time.Now().UTC()})
		}
	})
}

// cacheDelete forgets an instance once the transaction commits.
func (t *Tx) cacheDelete(id string) {
	if t.cache == nil {
		return
	}
	c := t.cache
	t.tx.OnCommit(func() {
		c.mu.Lock()
		old, had := c.byID[id]
		delete(c.byID, id)
		c.sorted = nil
		notify := c.onChange
		c.mu.Unlock()
		if notify != nil && had {
			notify(InstanceChange{Old: old, At: time.Now().UTC()})
		}
	})
}

// InstanceSnapshot returns every instance ordered by name, as of the
// latest commit, without a transaction, a copy or a sort: the slice and
// the records it points to are shared with every other reader until the
// next commit, so callers must not modify them. It is for readers of the
// whole fleet (the API's list) where copying 10,000 records per call was
// the cost; Tx.Instances returns copies.
func (s *Store) InstanceSnapshot() []*vm.Instance {
	return s.instances.snapshot()
}
