package store

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labvm/labvm/vm"
	bolt "go.etcd.io/bbolt"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "labvm.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func TestInstancesByIDAndName(t *testing.T) {
	s, _ := openTemp(t)
	inst := vm.Instance{ID: "0123456789abcdef", Name: "alice-dev", State: vm.StateRunning, IP: netip.MustParseAddr("10.0.0.10")}
	if err := s.Update(func(tx *Tx) error { return tx.CreateInstance(inst) }); err != nil {
		t.Fatal(err)
	}
	dup := inst
	dup.ID = "fedcba9876543210"
	if err := s.Update(func(tx *Tx) error { return tx.CreateInstance(dup) }); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	if err := s.View(func(tx *Tx) error {
		got, err := tx.InstanceByName("alice-dev")
		if err != nil || got.ID != inst.ID || got.State != vm.StateRunning || got.IP != inst.IP {
			t.Fatalf("by name: %+v %v", got, err)
		}
		if _, err := tx.Instance(dup.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("refused duplicate was stored: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *Tx) error { return tx.DeleteInstance(inst.ID) }); err != nil {
		t.Fatal(err)
	}
	if err := s.View(func(tx *Tx) error {
		if _, err := tx.InstanceByName("alice-dev"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("name survives delete: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestIPAllocations(t *testing.T) {
	s, _ := openTemp(t)
	a, b := netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("10.0.0.11")
	err := s.Update(func(tx *Tx) error {
		if err := tx.AllocateIP("default", a, "i1"); err != nil {
			return err
		}
		if err := tx.AllocateIP("default", b, "i2"); err != nil {
			return err
		}
		return tx.AllocateIP("other", a, "i3")
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *Tx) error { return tx.AllocateIP("default", a, "i9") }); !errors.Is(err, ErrExists) {
		t.Fatalf("double allocation: %v", err)
	}
	if err := s.Update(func(tx *Tx) error { return tx.ReleaseIP("default", b) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *Tx) error { return tx.ReleaseIP("default", b) }); err != nil { // idempotent
		t.Fatal(err)
	}
	if err := s.View(func(tx *Tx) error {
		got, err := tx.IPAllocations("default")
		if err != nil || len(got) != 1 || got[0].IP != a || got[0].InstanceID != "i1" {
			t.Fatalf("allocations = %+v, %v", got, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestOperationsPrune(t *testing.T) {
	now := time.Now()
	at := func(h int) *time.Time { t := now.Add(time.Duration(-h) * time.Hour); return &t }
	tests := []struct {
		name string
		ops  []Operation
		keep int
		want []string
	}{
		{
			name: "older than the cutoff go, running stay",
			ops: []Operation{
				{ID: "old", Status: "succeeded", CreatedAt: *at(48), DoneAt: at(48)},
				{ID: "new", Status: "failed", CreatedAt: *at(1), DoneAt: at(1)},
				{ID: "run", Status: "running", CreatedAt: *at(49)},
			},
			keep: 100,
			want: []string{"run", "new"},
		},
		{
			name: "beyond keep the oldest finished go",
			ops: []Operation{
				{ID: "a", Status: "succeeded", CreatedAt: *at(5), DoneAt: at(5)},
				{ID: "b", Status: "succeeded", CreatedAt: *at(4), DoneAt: at(4)},
				{ID: "c", Status: "succeeded", CreatedAt: *at(3), DoneAt: at(3)},
				{ID: "run", Status: "running", CreatedAt: *at(6)},
			},
			keep: 2,
			want: []string{"run", "b", "c"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openTemp(t)
			if err := s.Update(func(tx *Tx) error {
				for _, op := range tt.ops {
					if err := tx.PutOperation(op); err != nil {
						return err
					}
				}
				_, err := tx.PruneOperations(now.Add(-24*time.Hour), tt.keep)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			var ids []string
			if err := s.View(func(tx *Tx) error {
				got, err := tx.Operations()
				for _, op := range got {
					ids = append(ids, op.ID)
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if strings.Join(ids, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("after prune: %v, want %v", ids, tt.want)
			}
		})
	}
}

func TestSchemaVersion(t *testing.T) {
	s, path := openTemp(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A database from a newer labvmd must be refused, not misread.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte("99")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err == nil {
		t.Fatal("newer schema accepted")
	}
}

func TestOpenLockedFailsFast(t *testing.T) {
	_, path := openTemp(t)
	start := time.Now()
	if _, err := Open(path); err == nil {
		t.Fatal("second open of a locked database succeeded")
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("second open hung")
	}
}

// TestGroupCommit: concurrent updates share commits, yet each keeps its
// own outcome: a failed call's writes never land, the others' all do, and
// two creates of one name leave exactly one winner.
// TestGroupCommit: concurrent Update calls share bbolt transactions (so
// they share fsyncs), and a call alone gets its own. Calls in one group run
// inside the same *bolt.Tx, so the distinct transactions the calls saw are
// the transactions committed; the test keeps every one referenced, so no
// two can share an address.
func TestGroupCommit(t *testing.T) {
	for _, tt := range []struct {
		name       string
		calls      int
		concurrent bool
		// hold makes the first call wait inside its transaction until
		// every other call has queued behind it.
		hold bool
		// wantTxs is the exact count; 0 means only "fewer than calls".
		wantTxs int
	}{
		{name: "one after another", calls: 8, wantTxs: 8},
		{name: "two queued behind one", calls: 3, concurrent: true, hold: true, wantTxs: 2},
		{name: "64 queued behind one", calls: 64, concurrent: true, hold: true, wantTxs: 2},
		{name: "64 racing", calls: 64, concurrent: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openTemp(t)
			var mu sync.Mutex
			var txs []*bolt.Tx
			note := func(tx *Tx) {
				mu.Lock()
				defer mu.Unlock()
				if !slices.Contains(txs, tx.tx) {
					txs = append(txs, tx.tx)
				}
			}
			put := func(tx *Tx, i int) error {
				note(tx)
				return tx.tx.Bucket(bucketMeta).Put([]byte(fmt.Sprintf("g%02d", i)), []byte("v"))
			}
			if !tt.concurrent {
				for i := range tt.calls {
					if err := s.Update(func(tx *Tx) error { return put(tx, i) }); err != nil {
						t.Fatal(err)
					}
				}
			} else {
				errs := make(chan error, tt.calls)
				var wg sync.WaitGroup
				first := 0
				if tt.hold {
					// The first call leads; it returns once the others
					// have queued, so they all commit in the next group.
					first = 1
					started := make(chan struct{})
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs <- s.Update(func(tx *Tx) error {
							close(started)
							for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
								s.gmu.Lock()
								queued := len(s.queue)
								s.gmu.Unlock()
								if queued == tt.calls-1 {
									break
								}
							}
							return put(tx, 0)
						})
					}()
					<-started
				}
				for i := first; i < tt.calls; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs <- s.Update(func(tx *Tx) error {
							time.Sleep(100 * time.Microsecond) // a write worth grouping
							return put(tx, i)
						})
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := s.View(func(tx *Tx) error {
				for i := range tt.calls {
					if tx.tx.Bucket(bucketMeta).Get([]byte(fmt.Sprintf("g%02d", i))) == nil {
						t.Errorf("call %d's write is missing", i)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.wantTxs > 0 && len(txs) != tt.wantTxs:
				t.Errorf("%d calls committed in %d transactions, want %d", tt.calls, len(txs), tt.wantTxs)
			case tt.wantTxs == 0 && len(txs) >= tt.calls:
				t.Errorf("%d concurrent calls committed in %d transactions: not grouped", tt.calls, len(txs))
			}
			t.Logf("%d calls, %d transactions", tt.calls, len(txs))
		})
	}
}

// TestGroupCommitIsolatesFailures: in a group, a call that fails or panics
// has none of its writes land and gets its own outcome; the others commit.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	s, _ := openTemp(t)
	const n = 64
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Update(func(tx *Tx) error {
				// Every third call writes, then fails: none of it may land.
				if err := tx.tx.Bucket(bucketMeta).Put([]byte(fmt.Sprintf("k%02d", i)), []byte("v")); err != nil {
					return err
				}
				if i%3 == 0 {
					return fmt.Errorf("call %d fails", i)
				}
				// Two calls race to create one name.
				if i == 1 || i == 2 {
					return tx.CreateInstance(vm.Instance{ID: fmt.Sprintf("id%d", i), Name: "same-name"})
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errs)
	failed, exists := 0, 0
	for err := range errs {
		switch {
		case errors.Is(err, ErrExists):
			exists++
		case err != nil:
			failed++
		}
	}
	if want := (n + 2) / 3; failed != want || exists != 1 {
		t.Fatalf("failed = %d (want %d), name conflicts = %d (want 1)", failed, want, exists)
	}
	if err := s.View(func(tx *Tx) error {
		for i := range n {
			got := tx.tx.Bucket(bucketMeta).Get([]byte(fmt.Sprintf("k%02d", i)))
			if wantWritten := i%3 != 0 && i != 1 && i != 2; i != 1 && i != 2 && (got != nil) != wantWritten {
				t.Errorf("key k%02d written = %v, want %v", i, got != nil, wantWritten)
			}
		}
		if _, err := tx.InstanceByName("same-name"); err != nil {
			t.Errorf("the winning create is missing: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A panic reaches its own caller, and the store still works after.
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want boom", p)
			}
		}()
		_ = s.Update(func(tx *Tx) error { panic("boom") }) // never returns
	}()
	if err := s.Update(func(tx *Tx) error { return nil }); err != nil {
		t.Fatalf("update after a panic: %v", err)
	}
}
