package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/labvm/labvm/daemon/api"
)

// tunnelProtocol is the Upgrade token labvmd answers with a raw stream.
const tunnelProtocol = "labvm-tunnel"

// Tunnel connects to a TCP port of the instance through labvmd. Reading
// and writing the returned connection is talking to the guest's port;
// CloseWrite on it (a *net.UnixConn, or the ssh process's stdin for a
// remote daemon) half-closes.
func (c *Client) Tunnel(ctx context.Context, name string, port int) (net.Conn, error) {
	return c.upgrade(ctx, "/v1/instances/"+esc(name)+"/tunnel?port="+strconv.Itoa(port))
}

// Console connects to the instance's serial console. Another console
// session on the same instance is taken over.
func (c *Client) Console(ctx context.Context, name string) (net.Conn, error) {
	return c.upgrade(ctx, "/v1/instances/"+esc(name)+"/console")
}

// upgrade sends path as an HTTP/1.1 upgrade on a connection of its own
// and hands that connection back once labvmd switched protocols. ctx
// bounds the handshake only, not the stream that follows.
func (c *Client) upgrade(ctx context.Context, path string) (net.Conn, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, c.dialError(err)
	}
	// A blocked read or write of the handshake returns as soon as ctx
	// ends: the connection is closed under it (an ssh process's pipes
	// have no deadlines).
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	out, err := c.handshake(ctx, conn, path)
	if !stop() || err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return out, nil
}

func (c *Client) handshake(ctx context.Context, conn net.Conn, path string) (net.Conn, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://labvmd"+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", tunnelProtocol)
	if err := req.Write(conn); err != nil {
		if e := c.remoteError(err); e != nil {
			return nil, e
		}
		return nil, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("send upgrade to labvmd at %s: %v", c.target, err)}
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		if e := c.remoteError(err); e != nil {
			return nil, e
		}
		return nil, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("read labvmd's answer to the upgrade at %s: %v", c.target, err)}
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return nil, errorFrom(resp)
	}
	if br.Buffered() == 0 {
		return conn, nil
	}
	// Guest bytes that arrived with the 101 are already in br.
	early, _ := br.Peek(br.Buffered())
	return &bufferedConn{Conn: conn, r: io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn)}, nil
}

// errorFrom rebuilds the *api.Error of a refused upgrade.
func errorFrom(resp *http.Response) error {
	var er api.ErrorResponse
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(raw, &er) != nil || er.Error == nil {
		return &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("labvmd answered %s: %s", resp.Status, bytes.TrimSpace(raw))}
	}
	return er.Error
}

// bufferedConn is a connection that first yields bytes read ahead while
// parsing the response.
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the connection underneath when it can, else
// closes it.
func (c *bufferedConn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Conn.Close()
}
