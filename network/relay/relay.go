// Package relay copies bytes both ways between two streams, keeping TCP's
// half-close, so tunnels end the way the programs at each end expect.
// labvmd relays between a client's upgraded connection and a guest port;
// the CLI relays between a local socket (or stdio) and the upgraded
// connection. It knows nothing of who may connect.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
)

// ReadWriteCloser joins a reader to a connection's write side and keeps
// its half-close.
type ReadWriteCloser struct {
	io.Reader
	io.WriteCloser
}

// CloseWrite half-closes the write side.
func (rw ReadWriteCloser) CloseWrite() error { return CloseWrite(rw.WriteCloser) }

// CloseWrite half-closes c when it can, so the peer reads EOF while the
// other direction keeps flowing: what lets `ssh` and `nc` exit cleanly.
// Streams without a half-close (a console) are closed outright.
func CloseWrite(c io.Closer) error {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Close()
}

// Splice copies a→b and b→a. A direction that reaches EOF half-closes its
// destination; Splice returns when both are done, when one fails, or when
// ctx ends, and closes both on the way out.
func Splice(ctx context.Context, a, b io.ReadWriteCloser) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	copyHalf := func(dst, src io.ReadWriteCloser) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		if err != nil && !errors.Is(err, net.ErrClosed) {
			cancel() // a broken direction ends the whole session
			return
		}
		if CloseWrite(dst) != nil {
			cancel()
		}
	}
	wg.Add(2)
	go copyHalf(b, a)
	go copyHalf(a, b)
	bothDone := make(chan struct{})
	go func() { wg.Wait(); close(bothDone) }()
	select {
	case <-bothDone:
	case <-ctx.Done():
	}
	// Closing unblocks any copy still waiting, so none outlives Splice.
	a.Close()
	b.Close()
	<-bothDone
}

// ParsePort reads a TCP port number, 1-65535.
func ParsePort(s string) (int, error) {
	port, err := strconv.Atoi(s)
	if err != nil || port < 1 || port > 65535 {
		return 0, fmt.Errorf("port %q: want a number from 1 to 65535", s)
	}
	return port, nil
}
