// Package metrics owns labvmd's Prometheus metrics: a registry of its own
// (no global state), the collector that reads the daemon's state at each
// scrape (instances by state and size family, core quota, jobs,
// operations in flight, libvirt, the store, and each instance's libvirt
// counters), the counters and histograms operations feed as they end
// (ops.Observer), and the handler and TCP server for /metrics.
//
// It knows neither who may scrape (the API's route table says: owners,
// on the socket) nor where the state lives beyond the small interfaces
// in state.go, which the engines satisfy.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labvm/labvm/daemon/ops"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// durationBuckets span an operation's life: a delete takes a second, a
// create under TCG minutes, an image pull up to an hour.
var durationBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// maxScrapesInFlight bounds concurrent scrapes: each reads the store and
// asks libvirt, and the TCP listener answers anyone who reaches it.
const maxScrapesInFlight = 4

// Metrics is labvmd's registry and what feeds it.
type Metrics struct {
	log *slog.Logger
	reg *prometheus.Registry

	operations *prometheus.CounterVec
	opDuration *prometheus.HistogramVec
	stepTime   *prometheus.HistogramVec
	idleStops  prometheus.Counter
	schedules  *prometheus.CounterVec
}

var _ ops.Observer = (*Metrics)(nil)

// New returns a registry with the operation counters and the Go runtime
// and process collectors; CollectFrom adds the daemon's state.
func New(log *slog.Logger) *Metrics {
	if log == nil {
		log = slog.Default()
	}
	m := &Metrics{
		log: log,
		reg: prometheus.NewRegistry(),
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "labvm_operations_total",
			Help: "Operations ended, by kind (create, start, stop, restart, delete, image-import, image-pull) and outcome (succeeded, failed, cancelled).",
		}, []string{"kind", "outcome"}),
		opDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "labvm_operation_duration_seconds",
			Help:    "How long operations took from being accepted to their end, by kind and outcome.",
			Buckets: durationBuckets,
		}, []string{"kind", "outcome"}),
		stepTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "labvm_operation_step_duration_seconds",
			Help:    "How long each step of an operation took, by operation kind and the step's stable name (disk, seed, boot, wait-guest, ...).",
			Buckets: durationBuckets,
		}, []string{"kind", "step"}),
	}
	m.idleStops = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "labvm_idle_stops_total",
		Help: "Instances the idle shutdown stopped.",
	})
	m.schedules = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "labvm_schedule_actions_total",
		Help: "Times a schedule came due, by action (start, stop) and outcome (started: an operation began; skipped: the instance was busy or already there).",
	}, []string{"action", "outcome"})
	m.reg.MustRegister(m.operations, m.opDuration, m.stepTime, m.idleStops, m.schedules,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// OperationFinished counts an ended operation and its steps' durations.
func (m *Metrics) OperationFinished(f ops.Finished) {
	m.operations.WithLabelValues(f.Kind, f.Outcome).Inc()
	m.opDuration.WithLabelValues(f.Kind, f.Outcome).Observe(f.Took.Seconds())
	for _, st := range f.Steps {
		m.stepTime.WithLabelValues(f.Kind, st.Step).Observe(st.Took.Seconds())
	}
}

// IdleStop counts an instance the idle shutdown stopped.
func (m *Metrics) IdleStop() { m.idleStops.Inc() }

// ScheduleAction counts a schedule that came due.
func (m *Metrics) ScheduleAction(action, outcome string) {
	m.schedules.WithLabelValues(action, outcome).Inc()
}

// SessionsFrom reports the guest sessions open now (ssh, tunnels, the
// console) at each scrape.
func (m *Metrics) SessionsFrom(open func() int) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "labvm_sessions_open",
		Help: "Guest sessions open through labvmd now: ssh, tunnels, forwards, open, the console.",
	}, func() float64 { return float64(open()) }))
}

// CollectFrom registers the collector that reads s at every scrape.
func (m *Metrics) CollectFrom(s State) {
	m.reg.MustRegister(newStateCollector(s))
}

// Gatherer is the registry (tests).
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler serves the registry in the Prometheus text format (or what the
// scraper negotiates). A part of the state that cannot be read is logged
// and left out; the rest is still served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:            errorLog{m.log},
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: maxScrapesInFlight,
	})
}

// errorLog is promhttp's logger on slog.
type errorLog struct{ log *slog.Logger }

func (l errorLog) Println(v ...any) { l.log.Warn("metrics", "error", fmt.Sprint(v...)) }

// Serve answers GET /metrics on ln, without authentication, until ctx
// ends. It is for a TCP address the operator chose (metrics_listen),
// which should be loopback or behind a proxy that authenticates.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      scrapeTimeout + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
	}
	stop := context.AfterFunc(ctx, func() {
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdown); err != nil {
			_ = srv.Close()
		}
	})
	defer stop()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
