package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/vm"
	"golang.org/x/sys/unix"
)

// readiness collects cloud-init phone-home calls, one signal per instance.
type readiness struct {
	mu sync.Mutex
	// phoned holds a channel per instance, closed when it phoned home.
	phoned map[string]chan struct{}
}

func newReadiness() *readiness { return &readiness{phoned: map[string]chan struct{}{}} }

func (r *readiness) chanLocked(id string) chan struct{} {
	ch, ok := r.phoned[id]
	if !ok {
		ch = make(chan struct{})
		r.phoned[id] = ch
	}
	return ch
}

// arm forgets any earlier phone-home of the instance: each boot must phone
// home anew.
func (r *readiness) arm(id string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.phoned, id)
	return r.chanLocked(id)
}

func (r *readiness) signal(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := r.chanLocked(id)
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (r *readiness) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.phoned, id)
}

// waitReady blocks until the guest is ready: the QEMU guest agent answers
// guest-ping, or cloud-init phones home, whichever comes first. Real cloud
// images may lack the agent until cloud-init installs it; the test image
// has no cloud-init; either signal is proof the guest booted.
func (e *Engine) waitReady(ctx context.Context, inst vm.Instance, phoned <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.ReadyTimeout)
	defer cancel()
	if e.cfg.ReadyProbe == ReadyProbeNone {
		// No guest to ask: the running domain is all there is.
		st, err := e.hv.DomainState(ctx, inst.Domain)
		if err == nil && st != vm.DomainRunning {
			err = fmt.Errorf("domain %s is %s, not running", inst.Domain, st)
		}
		return err
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		pingCtx, pingCancel := context.WithTimeout(ctx, 2*time.Second)
		err := e.hv.AgentPing(pingCtx, inst.Domain)
		pingCancel()
		if err == nil {
			return nil
		}
		if st, serr := e.hv.DomainState(ctx, inst.Domain); serr == nil && st == vm.DomainAbsent {
			return fmt.Errorf("the domain stopped while booting; see %s", e.paths.Console(inst.ID))
		}
		select {
		case <-phoned:
			return nil
		case <-e.stopping:
			return ErrInterrupted
		case <-tick.C:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("guest not ready after %s: neither the QEMU guest agent answered nor cloud-init phoned home; the console log is %s",
					e.cfg.ReadyTimeout, e.paths.Console(inst.ID))
			}
			return ctx.Err()
		}
	}
}

func (e *Engine) phoneHomeURL(inst vm.Instance) string {
	if e.cfg.PhoneHomePort == 0 {
		return ""
	}
	return "http://" + net.JoinHostPort(inst.Gateway.String(), strconv.Itoa(e.cfg.PhoneHomePort)) + "/v1/phone-home/" + inst.ID
}

// phoneHome serves cloud-init's phone_home on each VNet gateway, and only
// there: never on the host's other addresses. It answers only a call that
// arrives on the calling instance's own gateway from the instance's own
// address, so one guest cannot mark another ready. Guests are hostile:
// requests are bounded in time and size, and one address may hold only a
// few connections at once.
type phoneHome struct {
	e    *Engine
	ctx  context.Context
	srv  *http.Server
	mu   sync.Mutex
	lns  map[netip.Addr]net.Listener
	open map[netip.Addr]int
}

// phoneHomeConnsPerGuest bounds the connections one guest address holds
// to the phone-home listener.
const phoneHomeConnsPerGuest = 4

// startPhoneHome starts serving; SetGateways says where.
func (e *Engine) startPhoneHome(ctx context.Context) {
	if e.cfg.PhoneHomePort == 0 {
		return
	}
	ph := &phoneHome{e: e, ctx: ctx, lns: map[netip.Addr]net.Listener{}, open: map[netip.Addr]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/phone-home/{id}", ph.handle)
	ph.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	e.phone.Store(ph)
	e.ops.Add()
	go func() {
		defer e.ops.Done()
		<-ctx.Done()
		_ = ph.srv.Close() // closes every listener; their Serve calls return
	}()
	e.refreshPhoneHome()
}

// refreshPhoneHome listens on the gateways of the VNets as recorded now.
func (e *Engine) refreshPhoneHome() {
	ph := e.phone.Load()
	if ph == nil {
		return
	}
	var vnets []store.VNet
	if err := e.store.View(func(tx *store.Tx) error {
		var err error
		vnets, err = tx.VNets()
		return err
	}); err != nil {
		e.log.Warn("phone-home: read VNets", "error", err)
		return
	}
	var gws []netip.Addr
	for _, v := range vnets {
		for _, sn := range v.Subnets {
			gws = append(gws, network.Gateway(sn.CIDR))
		}
	}
	ph.setGateways(gws)
}

// NetworksChanged is called after VNets or subnets change, so phone-home
// listens on exactly the current gateways.
func (e *Engine) NetworksChanged() { e.refreshPhoneHome() }

func (ph *phoneHome) setGateways(gws []netip.Addr) {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	want := map[netip.Addr]bool{}
	for _, gw := range gws {
		want[gw] = true
		if _, ok := ph.lns[gw]; ok || ph.ctx.Err() != nil {
			continue
		}
		// IP_FREEBIND: the gateway address may not be on its bridge yet.
		lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		addr := net.JoinHostPort(gw.String(), strconv.Itoa(ph.e.cfg.PhoneHomePort))
		ln, err := lc.Listen(ph.ctx, "tcp", addr)
		if err != nil {
			ph.e.log.Warn("phone-home listener not started; readiness relies on the guest agent", "addr", addr, "error", err)
			continue
		}
		ln = &guestLimitListener{Listener: ln, ph: ph}
		ph.lns[gw] = ln
		ph.e.ops.Add()
		go func() {
			defer ph.e.ops.Done()
			_ = ph.srv.Serve(ln) // ends when the listener is closed
		}()
	}
	for gw, ln := range ph.lns {
		if !want[gw] {
			_ = ln.Close() // a removed gateway: its Serve returns
			delete(ph.lns, gw)
		}
	}
}

func (ph *phoneHome) handle(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	e := ph.e
	id := r.PathValue("id")
	var inst vm.Instance
	err := e.store.View(func(tx *store.Tx) error {
		var err error
		inst, err = tx.Instance(id)
		return err
	})
	from, _ := netip.ParseAddrPort(r.RemoteAddr)
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	to, _ := netip.ParseAddrPort(fmt.Sprint(local))
	if err != nil || from.Addr().Unmap() != inst.IP || to.Addr().Unmap() != inst.Gateway {
		http.Error(w, "unknown instance", http.StatusNotFound)
		return
	}
	e.ready.signal(id)
	e.log.Info("phone home", "instance", inst.Name, "from", from.Addr())
	w.WriteHeader(http.StatusNoContent)
}

// guestLimitListener admits at most phoneHomeConnsPerGuest connections
// from one address at a time.
type guestLimitListener struct {
	net.Listener
	ph *phoneHome
}

func (l *guestLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		from := ap.Addr().Unmap()
		l.ph.mu.Lock()
		full := l.ph.open[from] >= phoneHomeConnsPerGuest
		if !full {
			l.ph.open[from]++
		}
		l.ph.mu.Unlock()
		if full {
			_ = c.Close() // a guest holding too many connections gets no more
			continue
		}
		return &guestConn{Conn: c, ph: l.ph, from: from}, nil
	}
}

type guestConn struct {
	net.Conn
	ph   *phoneHome
	from netip.Addr
	once sync.Once
}

func (c *guestConn) Close() error {
	c.once.Do(func() {
		c.ph.mu.Lock()
		if c.ph.open[c.from]--; c.ph.open[c.from] <= 0 {
			delete(c.ph.open, c.from)
		}
		c.ph.mu.Unlock()
	})
	return c.Conn.Close()
}
