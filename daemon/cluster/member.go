package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Instance is what the cluster is told of one instance.
type Instance struct {
	Name   string
	State  api.InstanceState
	Owner  string
	Size   string
	Family string
	VCPUs  int
}

// Snapshot is this host as it is now.
type Snapshot struct {
	Capacity  api.HostCapacity
	Instances []Instance
	// Images are the names of the images this host has.
	Images []string
}

// Source reads this host's snapshot; the daemon's wiring builds it from
// its engines.
type Source func() (Snapshot, error)

// hostRecord is hosts/<host>. The capacity's fields sit at its top
// level, as in the API's ClusterHost (whose State and Instances the
// readers work out themselves).
type hostRecord struct {
	Name string `json:"name"`
	api.HostCapacity
	Instances int      `json:"instances"`
	Images    []string `json:"images,omitempty"`
	// SSH and Socket are how users reach this host's labvmd.
	SSH         string    `json:"ssh,omitempty"`
	Socket      string    `json:"socket,omitempty"`
	Version     string    `json:"version"`
	PublishedAt time.Time `json:"published_at"`
}

// instanceRecord is instances/<host>/<name>.
type instanceRecord struct {
	Name   string            `json:"name"`
	State  api.InstanceState `json:"state"`
	Owner  string            `json:"owner"`
	Size   string            `json:"size"`
	Family string            `json:"family"`
	VCPUs  int               `json:"vcpus"`
}

const (
	// opTimeout bounds each etcd call the member makes.
	opTimeout = 5 * time.Second
	// readTimeout bounds the cluster-wide reads users wait for.
	readTimeout = 3 * time.Second
	// refreshEvery republishes capacity (memory and disk move by
	// themselves); instances are republished when told (Changed).
	refreshEvery = 15 * time.Second
	// coalesce gathers a burst of changes into one publish.
	coalesce = 200 * time.Millisecond
	// maxTxnOps stays under etcd's default --max-txn-ops (128).
	maxTxnOps = 100
)

// Member is this labvmd in the cluster.
type Member struct {
	cfg     Config
	src     Source
	log     *slog.Logger
	cli     *clientv3.Client
	keys    keys
	changed chan struct{}

	mu        sync.Mutex
	connected bool
	lastErr   error
	// roles is where the cluster's roles are cached; nil: not kept.
	roles RoleCache
	// reserving counts the names being created or released here, which
	// reconcileNames must leave alone.
	reserving map[string]int
}

// New makes the etcd client (it does not wait for etcd: a host starts
// and serves its own instances whether or not etcd answers).
func New(cfg Config, src Source, log *slog.Logger) (*Member, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		TLS:                  tlsCfg,
		DialTimeout:          opTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster etcd client: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Member{cfg: cfg, src: src, log: log, cli: cli, keys: newKeys(cfg.Name), changed: make(chan struct{}, 1), reserving: map[string]int{}}, nil
}

// Close ends the etcd client.
func (m *Member) Close() error { return m.cli.Close() }

// Host is this host's name in the cluster.
func (m *Member) Host() string { return m.cfg.Host }

// Changed tells the member that instances changed; it republishes soon.
// It never blocks.
func (m *Member) Changed() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// Membership is this host's place in the cluster, now.
func (m *Member) Membership() api.ClusterMembership {
	ok, err := m.Connected()
	out := api.ClusterMembership{Name: m.cfg.Name, Host: m.cfg.Host, Connected: ok}
	if err != nil {
		out.Error = err.Error()
	}
	return out
}

// Connected reports whether this host holds its lease now, and the last
// error when it does not.
func (m *Member) Connected() (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.connected, m.lastErr
}

func (m *Member) setConnected(ok bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.connected, m.lastErr = ok, err
}

// Run keeps this host in the cluster until ctx ends: a lease kept alive,
// the host and its instances published, everything published again after
// etcd was away. etcd being down never stops the daemon: Run retries,
// and the host serves its own instances meanwhile. At the end it revokes
// its lease, so the host shows as lost at once.
func (m *Member) Run(ctx context.Context) {
	backoff := time.Second
	for {
		start := time.Now()
		err := m.session(ctx)
		if ctx.Err() != nil {
			m.setConnected(false, nil)
			return
		}
		m.setConnected(false, err)
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		m.log.Warn("cluster registry unreachable; this host's own instances are still served, cluster-wide creates are refused", "cluster", m.cfg.Name, "etcd", strings.Join(m.cfg.Endpoints, ","), "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// session is one lease: granted, kept alive, and the host published
// under it, until the lease is lost (etcd away longer than the TTL), a
// publish fails, or ctx ends.
func (m *Member) session(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, opTimeout)
	lease, err := m.cli.Grant(gctx, int64(m.cfg.ttl()/time.Second))
	cancel()
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	// Leaving the cluster (ctx ended) revokes the lease, so the host shows
	// as lost at once rather than after the TTL.
	defer func() {
		if ctx.Err() != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_, _ = m.cli.Revoke(rctx, lease.ID) // best effort: the lease expires anyway
			cancel()
		}
	}()
	kctx, stopKeep := context.WithCancel(ctx)
	defer stopKeep()
	keep, err := m.cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keep lease alive: %w", err)
	}
	// published is what etcd holds of our instances: read once per
	// session, then kept equal by our own writes.
	published, err := m.readPublished(ctx)
	if err != nil {
		return err
	}
	snap, err := m.src()
	if err != nil {
		return fmt.Errorf("read this host's state: %w", err)
	}
	if err := m.reconcileNames(ctx, snap); err != nil {
		return err
	}
	var roleChanges clientv3.WatchChan
	if m.roles != nil {
		rev, err := m.syncRoles(ctx)
		if err != nil {
			return err
		}
		roleChanges = m.cli.Watch(clientv3.WithRequireLeader(kctx), m.keys.roles(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	}
	if err := m.publish(ctx, lease.ID, published); err != nil {
		return err
	}
	m.setConnected(true, nil)
	m.log.Info("joined the cluster", "cluster", m.cfg.Name, "host", m.cfg.Host, "instances", len(published))
	tick := time.NewTicker(refreshEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-keep:
			if !ok {
				return fmt.Errorf("lease lost: etcd unreachable for longer than %v", m.cfg.ttl())
			}
		case <-m.changed:
			select { // a burst of changes is one publish
			case <-time.After(coalesce):
			case <-ctx.Done():
				continue
			}
			if err := m.publish(ctx, lease.ID, published); err != nil {
				return err
			}
		case wr, ok := <-roleChanges:
			if !ok || wr.Err() != nil {
				return fmt.Errorf("watch the cluster's roles: %v", wr.Err())
			}
			lctx, cancel := context.WithTimeout(ctx, opTimeout)
			_, err := m.loadRoles(lctx)
			cancel()
			if err != nil {
				return err
			}
		case <-tick.C:
			if err := m.publish(ctx, lease.ID, published); err != nil {
				return err
			}
		}
	}
}

// readPublished reads what etcd holds of this host's instances.
func (m *Member) readPublished(ctx context.Context) (map[string]string, error) {
	rctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := m.cli.Get(rctx, m.keys.hostInstances(m.cfg.Host), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read this host's published instances: %w", err)
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if _, name, ok := m.keys.instanceKey(string(kv.Key)); ok {
			out[name] = string(kv.Value)
		}
	}
	return out, nil
}

// publish writes the host record, the alive key under the lease, and
// the instances that differ from published (puts and deletes), in
// transactions of at most maxTxnOps; published is updated as they
// commit.
func (m *Member) publish(ctx context.Context, lease clientv3.LeaseID, published map[string]string) error {
	snap, err := m.src()
	if err != nil {
		return fmt.Errorf("read this host's state: %w", err)
	}
	want := make(map[string]string, len(snap.Instances))
	for _, inst := range snap.Instances {
		b, err := json.Marshal(instanceRecord(inst))
		if err != nil {
			return err
		}
		want[inst.Name] = string(b)
	}
	type change struct {
		name, value string // value "" deletes
	}
	var changes []change
	for name, v := range want {
		if published[name] != v {
			changes = append(changes, change{name, v})
		}
	}
	for name := range published {
		if _, ok := want[name]; !ok {
			changes = append(changes, change{name, ""})
		}
	}
	for len(changes) > 0 {
		n := min(len(changes), maxTxnOps)
		ops := make([]clientv3.Op, 0, n)
		for _, c := range changes[:n] {
			if c.value == "" {
				ops = append(ops, clientv3.OpDelete(m.keys.instance(m.cfg.Host, c.name)))
			} else {
				ops = append(ops, clientv3.OpPut(m.keys.instance(m.cfg.Host, c.name), c.value))
			}
		}
		if err := m.commit(ctx, ops...); err != nil {
			return fmt.Errorf("publish instances: %w", err)
		}
		for _, c := range changes[:n] {
			if c.value == "" {
				delete(published, c.name)
			} else {
				published[c.name] = c.value
			}
		}
		changes = changes[n:]
	}
	rec := hostRecord{Name: m.cfg.Host, HostCapacity: snap.Capacity,
		Instances: len(snap.Instances), Images: snap.Images, SSH: m.cfg.sshURL(), Socket: m.cfg.Socket,
		Version: m.cfg.Version, PublishedAt: time.Now().UTC()}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := m.commit(ctx,
		clientv3.OpPut(m.keys.host(m.cfg.Host), string(b)),
		clientv3.OpPut(m.keys.alive(m.cfg.Host), rec.PublishedAt.Format(time.RFC3339), clientv3.WithLease(lease)),
	); err != nil {
		return fmt.Errorf("publish host: %w", err)
	}
	return nil
}

func (m *Member) commit(ctx context.Context, ops ...clientv3.Op) error {
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := m.cli.Txn(cctx).Then(ops...).Commit()
	return err
}
