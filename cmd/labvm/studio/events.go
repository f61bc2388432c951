package studio

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

// instanceKinds are the operations whose target is an instance.
var instanceKinds = map[api.OperationKind]bool{
	api.OpCreate: true, api.OpStart: true, api.OpStop: true, api.OpRestart: true, api.OpDelete: true,
}

// hub follows labvmd's event stream, one connection for the whole
// process however many pages are open, and sends each page what changed
// as Server-Sent Events:
//
//	event: instance  data: {"name","html","gone"}  a list row, rendered
//	event: quota     data: {"html"}                the quota, as creates and deletes change it
//	event: resync    data: {}                      the stream was lost: fetch everything again
type hub struct {
	s *Server

	mu   sync.Mutex
	subs map[chan sseMessage]struct{}
	// ops are the instances' operations in progress, by instance name.
	ops map[string]api.Operation
	// open is true while labvmd's stream is.
	open bool
}

type sseMessage struct {
	event string
	data  []byte
}

func newHub(s *Server) *hub {
	return &hub{s: s, subs: map[chan sseMessage]struct{}{}, ops: map[string]api.Operation{}}
}

// runningOp is the operation the hub last saw running on name, if any.
func (h *hub) runningOp(name string) *api.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	if op, ok := h.ops[name]; ok {
		return &op
	}
	return nil
}

// saw records an operation the page itself started, so the rows show it
// before its first event.
func (h *hub) saw(op api.Operation) {
	if !instanceKinds[op.Kind] {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if op.Status.Done() {
		delete(h.ops, op.Target)
	} else {
		h.ops[op.Target] = op
	}
}

// run follows the event stream until ctx ends. After a loss it waits a
// moment, reconnects and tells the pages to fetch everything again:
// changes made meanwhile were not seen. The pages are told once the
// stream is back.
func (h *hub) run(ctx context.Context) {
	backoff := time.Second
	lost := false
	for ctx.Err() == nil {
		start := time.Now()
		err := h.s.c.FollowEvents(ctx, func() {
			h.mu.Lock()
			h.open = true
			h.mu.Unlock()
			if lost {
				h.broadcast(sseMessage{event: "resync", data: []byte("{}")})
			}
		}, func(op api.Operation) { h.event(ctx, op) })
		h.mu.Lock()
		h.open = false
		// What was running may have ended unseen.
		h.ops = map[string]api.Operation{}
		h.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		lost = true
		h.s.cfg.Logf("labvmd's event stream: %s; reconnecting", asAPIError(err).Message)
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// following reports whether the daemon's stream is open.
func (h *hub) following() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.open
}

// event renders what an operation changed and sends it to every page.
func (h *hub) event(ctx context.Context, op api.Operation) {
	if !instanceKinds[op.Kind] {
		return
	}
	h.saw(op)
	h.mu.Lock()
	n := len(h.subs)
	h.mu.Unlock()
	if n == 0 {
		return // nobody to tell; pages fetch everything when they open
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if msg, ok := h.instanceMessage(ctx, op.Target); ok {
		h.broadcast(msg)
	}
	// Cores are taken when a create starts and given back when a delete
	// ends; other operations leave the quota as it is.
	if op.Kind == api.OpCreate || (op.Kind == api.OpDelete && op.Status.Done()) {
		var b bytes.Buffer
		if err := tmpl.ExecuteTemplate(&b, "quota", h.s.quota(ctx)); err == nil {
			h.broadcast(jsonMessage("quota", map[string]any{"html": b.String()}))
		}
	}
}

// instanceMessage is the row of the instance as it is now, or that it
// is gone.
func (h *hub) instanceMessage(ctx context.Context, name string) (sseMessage, bool) {
	inst, err := h.s.c.Instance(ctx, name)
	if api.IsCode(err, api.CodeNotFound) {
		return jsonMessage("instance", map[string]any{"name": name, "gone": true}), true
	}
	if err != nil {
		h.s.cfg.Logf("show %s after an event: %s", name, asAPIError(err).Message)
		return sseMessage{}, false
	}
	var b bytes.Buffer
	if err := tmpl.ExecuteTemplate(&b, "row", h.s.row(h.s.whoami(ctx), inst)); err != nil {
		h.s.cfg.Logf("render %s: %v", name, err)
		return sseMessage{}, false
	}
	return jsonMessage("instance", map[string]any{"name": name, "html": b.String(), "state": inst.State}), true
}

func jsonMessage(event string, v any) sseMessage {
	b, _ := json.Marshal(v) // maps of strings and bools always encode
	return sseMessage{event: event, data: b}
}

// broadcast sends msg to every page. A page too slow to take it is
// dropped; its EventSource reconnects and fetches everything again.
func (h *hub) broadcast(msg sseMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- msg:
		default:
			delete(h.subs, ch)
			close(ch)
		}
	}
}

func (h *hub) subscribe() chan sseMessage {
	ch := make(chan sseMessage, 64)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch
}

func (h *hub) unsubscribe(ch chan sseMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}

// serveSSE is GET /events: the page's live updates, until it leaves.
func (h *hub) serveSSE(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch := h.subscribe()
	defer h.unsubscribe(ch)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	// A comment first, so the browser sees the stream open at once.
	fmt.Fprint(w, ": labvm studio events\n\n")
	flusher.Flush()
	keepalive := time.NewTicker(25 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keepalive.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
		case msg, ok := <-ch:
			if !ok {
				return
			}
			// data is JSON on one line: no newline can end the field early.
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", msg.event, msg.data); err != nil {
				return
			}
		}
		flusher.Flush()
	}
}
