package store

import (
	"sort"
	"sync"

	"github.com/labvm/labvm/vm"
	bolt "go.etcd.io/bbolt"
)

// instanceCache is every instance record, decoded. Decoding 10,000 JSON
// records for each `labvm list` cost most of its time and left most of
// the daemon's garbage; records change only through write transactions,
// which update the cache when (and only if) they commit.
type instanceCache struct {
	mu   sync.RWMutex
	byID map[string]vm.Instance
}

// loadInstances fills the cache from the database; Open calls it before
// anyone else can use the store.
func (s *Store) loadInstances() error {
	return s.db.View(func(btx *bolt.Tx) error {
		list, err := list[vm.Instance](&Tx{tx: btx}, bucketInstances)
		if err != nil {
			return err
		}
		s.instances.byID = make(map[string]vm.Instance, len(list))
		for _, inst := range list {
			s.instances.byID[inst.ID] = inst
		}
		return nil
	})
}

// list returns a copy of every instance ordered by name.
func (c *instanceCache) list() []vm.Instance {
	c.mu.RLock()
	out := make([]vm.Instance, 0, len(c.byID))
	for _, inst := range c.byID {
		out = append(out, inst)
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
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
		defer c.mu.Unlock()
		if c.byID == nil {
			c.byID = map[string]vm.Instance{}
		}
		c.byID[inst.ID] = inst
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
		defer c.mu.Unlock()
		delete(c.byID, id)
	})
}
