package libvirt

import (
	"context"
	"fmt"
	"io"
	"sync"

	virt "libvirt.org/go/libvirt"
)

// OpenConsole attaches to the domain's serial console through a libvirt
// stream, so the caller needs neither the pty's path nor access to it.
// DOMAIN_CONSOLE_FORCE takes the console over from any earlier session: a
// session whose client vanished would otherwise hold it until the domain
// stops.
func (l *Driver) OpenConsole(ctx context.Context, name string) (io.ReadWriteCloser, error) {
	var stream *virt.Stream
	err := l.do(ctx, func(c *virt.Connect) error {
		s, err := c.NewStream(0)
		if err != nil {
			return err
		}
		err = onDomain(name, func(d *virt.Domain) error {
			return d.OpenConsole("", s, virt.DOMAIN_CONSOLE_FORCE)
		})(c)
		if err != nil {
			_ = s.Free()
			return err
		}
		stream = s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open console of %s: %w", name, err)
	}
	return &consoleStream{s: stream, done: make(chan struct{})}, nil
}

// consoleStream adapts a blocking libvirt stream to io.ReadWriteCloser.
// Aborting the stream wakes a Recv blocked in another goroutine, but
// freeing it under that Recv would be a use after free, so Close aborts
// at once and the stream is freed only after the last call returned.
type consoleStream struct {
	s *virt.Stream

	mu       sync.Mutex
	inflight int
	closed   bool
	freed    bool
	done     chan struct{}
}

// enter registers a call; it fails once the stream is closed.
func (c *consoleStream) enter() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return io.ErrClosedPipe
	}
	c.inflight++
	return nil
}

// leave ends a call and frees the stream if it was the last one after
// Close.
func (c *consoleStream) leave() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight--
	c.freeLocked()
}

func (c *consoleStream) freeLocked() {
	if c.closed && c.inflight == 0 && !c.freed {
		c.freed = true
		_ = c.s.Free()
		close(c.done)
	}
}

func (c *consoleStream) Read(p []byte) (int, error) {
	if err := c.enter(); err != nil {
		return 0, err
	}
	defer c.leave()
	n, err := c.s.Recv(p)
	if err != nil {
		if c.isClosed() {
			return 0, io.EOF
		}
		return 0, fmt.Errorf("read console: %w", err)
	}
	return max(n, 0), nil
}

func (c *consoleStream) Write(p []byte) (int, error) {
	if err := c.enter(); err != nil {
		return 0, err
	}
	defer c.leave()
	written := 0
	for written < len(p) {
		n, err := c.s.Send(p[written:])
		if err != nil {
			return written, fmt.Errorf("write console: %w", err)
		}
		written += max(n, 0)
	}
	return written, nil
}

func (c *consoleStream) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Close aborts the stream and waits until it is freed, which happens as
// soon as calls blocked in other goroutines return (the abort wakes them).
func (c *consoleStream) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.done
		return nil
	}
	c.closed = true
	// Abort fails only when the stream already ended (the domain
	// stopped); either way it is finished.
	_ = c.s.Abort()
	c.freeLocked()
	c.mu.Unlock()
	<-c.done
	return nil
}
