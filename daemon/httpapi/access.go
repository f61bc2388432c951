package httpapi

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/network/relay"
)

// tunnelProtocol is the Upgrade token of tunnel and console connections:
// after the 101 the connection carries the guest's bytes, nothing else.
const tunnelProtocol = "labvm-tunnel"

// tunnel connects the caller to a TCP port of their instance.
func (s *Server) tunnel(w http.ResponseWriter, c call) error {
	guest, err := s.openTunnel(c)
	s.auditNow(c, err)
	if err != nil {
		return err
	}
	return s.relay(w, c, guest)
}

func (s *Server) openTunnel(c call) (io.ReadWriteCloser, error) {
	if err := checkUpgrade(c.r); err != nil {
		return nil, err
	}
	v := c.r.URL.Query().Get("port")
	if v == "" {
		return nil, errdefs.Invalidf("port is required: ?port=N with N from 1 to 65535")
	}
	port, err := relay.ParsePort(v)
	if err != nil {
		return nil, errdefs.Invalidf("%v", err)
	}
	return s.Lifecycle.DialGuest(c.ctx(), c.inst, port)
}

// console connects the caller to their instance's serial console.
func (s *Server) console(w http.ResponseWriter, c call) error {
	err := checkUpgrade(c.r)
	var console io.ReadWriteCloser
	if err == nil {
		console, err = s.Lifecycle.OpenConsole(c.ctx(), c.inst)
	}
	s.auditNow(c, err)
	if err != nil {
		return err
	}
	return s.relay(w, c, console)
}

func checkUpgrade(r *http.Request) error {
	connUpgrade := false
	for _, v := range r.Header.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			connUpgrade = connUpgrade || strings.EqualFold(strings.TrimSpace(tok), "upgrade")
		}
	}
	if connUpgrade && strings.EqualFold(r.Header.Get("Upgrade"), tunnelProtocol) {
		return nil
	}
	return errdefs.New(errdefs.ErrInvalidArgument, "use `labvm tunnel`, `labvm forward`, `labvm ssh` or `labvm console`",
		"%s needs an HTTP upgrade (Connection: Upgrade, Upgrade: %s)", r.URL.Path, tunnelProtocol)
}

// relay answers 101, takes over the connection and copies bytes between
// it and guest until either side is done or the daemon stops. It owns
// guest from here on. The http.Server forgets hijacked connections, so
// the daemon's work group holds the session and the daemon waits for it.
func (s *Server) relay(w http.ResponseWriter, c call, guest io.ReadWriteCloser) error {
	client, buffered, err := http.NewResponseController(w).Hijack()
	if err != nil {
		guest.Close()
		return fmt.Errorf("take over the connection: %w", err)
	}
	defer client.Close()
	// The server's header and body deadlines must not cut a session that
	// lasts hours.
	_ = client.SetDeadline(time.Time{})
	action, target := c.note.action, c.note.target
	if _, err := io.WriteString(client, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+tunnelProtocol+"\r\n\r\n"); err != nil {
		guest.Close()
		s.Log.Info("tunnel client left before the upgrade", "action", action, "target", target, "caller", c.c.Name, "error", err)
		return nil
	}
	s.Work.Add()
	defer s.Work.Done()
	// A session that moves bytes is use of the instance: it resets the
	// idle shutdown's clock.
	session := s.Policy.Activity.Begin(c.inst.ID)
	defer session.End()
	guest = session.Wrap(guest)
	start := time.Now()
	// Bytes the client sent right behind its request sit in the server's
	// buffer, not in the socket.
	from := io.MultiReader(io.LimitReader(buffered.Reader, int64(buffered.Reader.Buffered())), client)
	relay.Splice(c.ctx(), relay.ReadWriteCloser{Reader: from, WriteCloser: client}, guest)
	s.Log.Info("tunnel closed", "action", action, "target", target, "caller", c.c.Name, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
