package ops

import (
	"sync"

	"github.com/labvm/labvm/daemon/store"
)

// Event is one change on the bus: an operation's, or an instance
// record's state (Instance), which may change without an operation (a
// guest powering itself off, reconcile finding a domain gone).
type Event struct {
	Op       *store.Operation
	Instance *store.InstanceChange
}

// Bus fans operation and instance changes out to event streams. A
// subscriber that does not keep up loses events rather than slowing
// operations down; `labvm wait`, the operation list and the instance
// list remain the complete record.
type Bus struct {
	mu   sync.Mutex
	subs map[chan Event]struct{}
}

// eventBuffer is how many changes a slow reader may fall behind.
const eventBuffer = 256

// Subscribe returns a channel of changes and the function that ends the
// subscription.
func (b *Bus) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, eventBuffer)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[chan Event]struct{}{}
	}
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.subs, ch)
	}
}

func (b *Bus) publish(op store.Operation) {
	b.send(func() Event { c := clone(op); return Event{Op: &c} })
}

// PublishInstance sends an instance record's change; the store calls it
// after each commit (store.OnInstanceChange). It never blocks.
func (b *Bus) PublishInstance(c store.InstanceChange) {
	b.send(func() Event { c := c; return Event{Instance: &c} })
}

func (b *Bus) send(event func() Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- event():
		default:
		}
	}
}

// Subscribers counts the open subscriptions.
func (b *Bus) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}
