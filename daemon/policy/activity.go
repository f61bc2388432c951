package policy

import (
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labvm/labvm/network/relay"
)

// noteEvery bounds how often one session reports that it moved bytes:
// the idle clock counts minutes, and a busy tunnel must not take a lock
// per read.
const noteEvery = time.Second

// Activity records, per instance, the guest sessions open through the
// daemon (ssh, tunnels, forwards, open, the console) and when one last
// moved bytes; exec counts as a session that moved bytes.
type Activity struct {
	clock Clock

	mu   sync.Mutex
	byID map[string]*instanceActivity
}

type instanceActivity struct {
	open  int
	moved time.Time
}

// NewActivity returns an empty record.
func NewActivity(c Clock) *Activity {
	if c == nil {
		c = RealClock{}
	}
	return &Activity{clock: c, byID: map[string]*instanceActivity{}}
}

// Touch records use of an instance now (an exec).
func (a *Activity) Touch(instanceID string) {
	now := a.clock.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.entryLocked(instanceID).moved = now
}

func (a *Activity) entryLocked(id string) *instanceActivity {
	ia := a.byID[id]
	if ia == nil {
		ia = &instanceActivity{}
		a.byID[id] = ia
	}
	return ia
}

// Last reports the sessions open to an instance and when one last moved
// bytes (zero: none since labvmd started).
func (a *Activity) Last(instanceID string) (open int, moved time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ia := a.byID[instanceID]; ia != nil {
		return ia.open, ia.moved
	}
	return 0, time.Time{}
}

// Open counts the sessions open to every instance.
func (a *Activity) Open() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, ia := range a.byID {
		n += ia.open
	}
	return n
}

// prune drops what is known of instances that are gone (deleted) and
// have no session open.
func (a *Activity) prune(exists map[string]bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, ia := range a.byID {
		if !exists[id] && ia.open == 0 {
			delete(a.byID, id)
		}
	}
}

// Session is one open session to an instance.
type Session struct {
	a  *Activity
	id string
	// noted is when the session last reported bytes, in Unix nanoseconds.
	noted  atomic.Int64
	closed atomic.Bool
}

// Begin records a session opened to an instance; End closes it.
func (a *Activity) Begin(instanceID string) *Session {
	a.mu.Lock()
	a.entryLocked(instanceID).open++
	a.mu.Unlock()
	return &Session{a: a, id: instanceID}
}

// Moved records that the session moved bytes (at most every noteEvery).
func (s *Session) Moved() {
	now := s.a.clock.Now()
	last := s.noted.Load()
	if last != 0 && now.UnixNano()-last < int64(noteEvery) {
		return
	}
	s.noted.Store(now.UnixNano())
	s.a.mu.Lock()
	if ia := s.a.entryLocked(s.id); now.After(ia.moved) {
		ia.moved = now
	}
	s.a.mu.Unlock()
}

// End closes the session; a second End does nothing.
func (s *Session) End() {
	if s.closed.Swap(true) {
		return
	}
	s.a.mu.Lock()
	defer s.a.mu.Unlock()
	if ia := s.a.byID[s.id]; ia != nil && ia.open > 0 {
		ia.open--
	}
}

// Wrap returns the guest side of a relay that reports each read and
// write of bytes to the session, keeping the half-close of the stream it
// wraps.
func (s *Session) Wrap(guest io.ReadWriteCloser) io.ReadWriteCloser {
	return &countingStream{ReadWriteCloser: guest, s: s}
}

type countingStream struct {
	io.ReadWriteCloser
	s *Session
}

func (c *countingStream) Read(p []byte) (int, error) {
	n, err := c.ReadWriteCloser.Read(p)
	if n > 0 {
		c.s.Moved()
	}
	return n, err
}

func (c *countingStream) Write(p []byte) (int, error) {
	n, err := c.ReadWriteCloser.Write(p)
	if n > 0 {
		c.s.Moved()
	}
	return n, err
}

// CloseWrite half-closes the wrapped stream where it can.
func (c *countingStream) CloseWrite() error { return relay.CloseWrite(c.ReadWriteCloser) }
