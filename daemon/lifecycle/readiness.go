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

	"github.com/labvm/labvm/daemon/ops"
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

// readyWatcher hears how a wait for the guest goes: *settleWatch records
// it on the operation and the instance; tests record it.
type readyWatcher interface {
	// Stage starts a step of the wait; Progress updates its detail.
	Stage(step ops.Step, detail string)
	Progress(detail string)
	// CloudInit is told once this boot is known to run cloud-init.
	CloudInit()
}

// guestReady is how a guest became ready.
type guestReady struct {
	// cloudInit is set when cloud-init's result of this boot was read;
	// errors are what it reported (bounded, escaped).
	cloudInit bool
	errors    []string
	// phoneHome is set when phone-home was the only signal, the agent
	// being unavailable.
	phoneHome bool
}

// waitReady blocks until the guest is ready, which means provisioned:
//
//   - a guest that runs cloud-init (decided once per boot through the
//     agent, see hasCloudInitScript) is ready when cloud-init has
//     finished this boot: /run/cloud-init/result.json exists. Its errors
//     come back in guestReady; the caller decides what they mean.
//   - a guest without cloud-init is ready when its agent first answers;
//     so is one whose agent answers but cannot run the probe (guest-exec
//     disabled), since it could not show cloud-init's result either.
//   - cloud-init's phone-home (sent at the final stage) is the signal
//     only while the agent is not available: it does not answer, or
//     reading result.json through it fails.
func (e *Engine) waitReady(ctx context.Context, w readyWatcher, inst vm.Instance, phoned <-chan struct{}) (guestReady, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.ReadyTimeout)
	defer cancel()
	if e.cfg.ReadyProbe == ReadyProbeNone {
		// No guest to ask: the running domain is all there is.
		st, err := e.hv.DomainState(ctx, inst.Domain)
		if err == nil && st != vm.DomainRunning {
			err = fmt.Errorf("domain %s is %s, not running", inst.Domain, st)
		}
		return guestReady{}, err
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	g := guestCheck{e: e, w: w, inst: inst}
	phonedHome := false
	for {
		if ready, done := g.check(ctx); done {
			return ready, nil
		}
		select {
		case <-phoned:
			phonedHome, phoned = true, nil
		default:
		}
		if phonedHome && !g.agentUsable {
			return guestReady{phoneHome: true}, nil
		}
		if st, serr := e.hv.DomainState(ctx, inst.Domain); serr == nil && st == vm.DomainAbsent {
			return guestReady{}, fmt.Errorf("the domain stopped while booting; see %s", e.paths.Console(inst.ID))
		}
		select {
		case <-phoned:
		case <-e.stopping:
			return guestReady{}, ErrInterrupted
		case <-tick.C:
		case <-ctx.Done():
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return guestReady{}, ctx.Err()
			}
			if g.cloudInit {
				what := g.detail
				if g.lastErr != nil {
					what += "; last read: " + clipGuestText(g.lastErr.Error(), 200)
				}
				return guestReady{}, fmt.Errorf("cloud-init did not finish within %s (%s); see `labvm logs %s --cloud-init` and the console log %s",
					e.cfg.ReadyTimeout, what, inst.Name, e.paths.Console(inst.ID))
			}
			return guestReady{}, fmt.Errorf("guest not ready after %s: neither the QEMU guest agent answered nor cloud-init phoned home; the console log is %s",
				e.cfg.ReadyTimeout, e.paths.Console(inst.ID))
		}
	}
}

// guestCheck is one boot's readiness checks through the agent.
type guestCheck struct {
	e    *Engine
	w    readyWatcher
	inst vm.Instance
	// probed is set once this boot's cloud-init probe answered.
	probed    bool
	cloudInit bool
	// agentUsable is whether the last check could use the agent.
	agentUsable bool
	detail      string
	lastErr     error
}

// check makes one round of checks and says whether the guest is ready.
func (g *guestCheck) check(ctx context.Context) (guestReady, bool) {
	e, dom := g.e, g.inst.Domain
	g.agentUsable = false
	pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := e.hv.AgentPing(pingCtx, dom)
	cancel()
	if err != nil {
		return guestReady{}, false
	}
	if !g.probed {
		has, err := e.hasCloudInit(ctx, dom)
		switch {
		case errors.Is(err, vm.ErrAgentUnavailable) || errors.Is(err, vm.ErrExecTimeout) || ctx.Err() != nil:
			return guestReady{}, false // not up enough yet: ask again
		case err != nil:
			// An agent that answers but cannot run the probe (guest-exec
			// disabled, no /bin/sh) cannot show cloud-init's result
			// either: its answer is all there is.
			e.log.Warn("cannot tell whether the guest runs cloud-init; its agent's answer counts as ready", "instance", g.inst.Name, "error", err)
			return guestReady{}, true
		}
		g.probed, g.cloudInit = true, has
		if !has {
			return guestReady{}, true
		}
		g.detail = "cloud-init: waiting for " + cloudInitResultPath
		g.w.Stage(StepCloudInit, g.detail)
		g.w.CloudInit()
	}
	if !g.cloudInit {
		return guestReady{}, true
	}
	b, err := e.readGuestFile(ctx, dom, cloudInitResultPath, maxCloudInitJSON)
	switch {
	case err == nil:
		errs, perr := parseCloudInitResult(b)
		if perr != nil {
			errs = []string{perr.Error()}
		}
		done := "cloud-init: finished"
		if len(errs) > 0 {
			done += " with errors"
		}
		g.w.Progress(done)
		return guestReady{cloudInit: true, errors: errs}, true
	case errors.Is(err, errGuestFileAbsent):
		g.agentUsable = true
	default:
		g.lastErr = err
		return guestReady{}, false
	}
	if b, err := e.readGuestFile(ctx, dom, cloudInitStatusPath, maxCloudInitJSON); err == nil {
		if d := parseCloudInitStatus(b); d != g.detail {
			g.detail = d
			g.w.Progress(d)
		}
	}
	return guestReady{}, false
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
