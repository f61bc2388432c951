package ops

import (
	"sync"

	"github.com/labvm/labvm/daemon/store"
)

// Bus fans operation changes out to event streams. A subscriber that does
// not keep up loses events rather than slowing operations down; `labvm
// wait` and the operation list remain the complete record.
type Bus struct {
	mu   sync.Mutex
	subs map[chan store.Operation]struct{}
}

// eventBuffer is how many changes a slow reader may fall behind.
const eventBuffer = 256

// Subscribe returns a channel of changes and the function that ends the
// subscription.
func (b *Bus) Subscribe() (<-chan store.Operation, func()) {
	ch := make(chan store.Operation, eventBuffer)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[chan store.Operation]struct{}{}
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
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- clone(op):
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
