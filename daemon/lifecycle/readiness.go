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
	"time"

	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
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

// startPhoneHome serves cloud-init's phone_home. It listens on all
// addresses, since VNet gateways come and go, but answers only calls that
// arrive on the calling instance's own gateway from the instance's own
// address, so one guest cannot mark another ready and nothing outside
// the VNets is served; the firewall admits the port only from VNets.
func (e *Engine) startPhoneHome(ctx context.Context) {
	if e.cfg.PhoneHomePort == 0 {
		return
	}
	addr := net.JoinHostPort("0.0.0.0", strconv.Itoa(e.cfg.PhoneHomePort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		e.log.Warn("phone-home listener not started; readiness relies on the guest agent", "addr", addr, "error", err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/phone-home/{id}", func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
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
		if err != nil || from.Addr() != inst.IP || to.Addr().Unmap() != inst.Gateway {
			http.Error(w, "unknown instance", http.StatusNotFound)
			return
		}
		e.ready.signal(id)
		e.log.Info("phone home", "instance", inst.Name, "from", from.Addr())
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	e.ops.Add()
	e.ops.Add()
	go func() {
		defer e.ops.Done()
		_ = srv.Serve(ln)
	}()
	go func() {
		defer e.ops.Done()
		<-ctx.Done()
		// The daemon is stopping: a listener that fails to close has no
		// one left to tell.
		_ = srv.Close()
	}()
}
