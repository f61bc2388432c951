package daemon

import (
	"encoding/json"
	"net/http"
	"sync"

	"github.com/labvm/labvm/daemon/api"
)

// eventBus fans operation changes out to event streams. A subscriber that
// does not keep up loses events rather than slowing operations down;
// `labvm wait` and the operation list remain the complete record.
type eventBus struct {
	mu   sync.Mutex
	subs map[chan api.Operation]struct{}
}

// eventBuffer is how many changes a slow reader may fall behind.
const eventBuffer = 256

func (b *eventBus) subscribe() (<-chan api.Operation, func()) {
	ch := make(chan api.Operation, eventBuffer)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[chan api.Operation]struct{}{}
	}
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.subs, ch)
	}
}

func (b *eventBus) publish(op api.Operation) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- cloneOp(op):
		default:
		}
	}
}

// streamEvents is GET /v1/events: every operation change, as
// newline-delimited JSON, until the client leaves. Readers see all
// operations; anyone else only their own.
func (d *Daemon) streamEvents(w http.ResponseWriter, r *http.Request, c Caller) error {
	seeAll := d.authorize(c, PermRead) == nil
	ch, unsubscribe := d.ops.events.subscribe()
	defer unsubscribe()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return nil
		case op := <-ch:
			if !seeAll && op.Caller != c.Name {
				continue
			}
			if err := enc.Encode(op); err != nil {
				return nil // client gone
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}
