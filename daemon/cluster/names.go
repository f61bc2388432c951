package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// nameRecord is names/<name>: which host holds the name, and the cores
// it counts against the cluster's quota.
type nameRecord struct {
	Host     string    `json:"host"`
	Owner    string    `json:"owner"`
	Family   string    `json:"family"`
	VCPUs    int       `json:"vcpus"`
	Reserved time.Time `json:"reserved"`
}

// quotaRecord is quota: the cluster's core limits (0 or absent: none).
type quotaRecord struct {
	Total    int            `json:"total,omitempty"`
	Families map[string]int `json:"families,omitempty"`
}

// Reservation is a name a create asks for, with the cores it will hold.
type Reservation struct {
	Name   string
	Owner  string
	Family string
	VCPUs  int
}

// reserveAttempts bounds the retries of a reservation or a release that
// lost a race with another one (the transaction compares revisions).
const reserveAttempts = 32

// Reserve takes r.Name for this host across the cluster, checking the
// cluster's quota in the same transaction: the name must be free on
// every host and the cores within the limits, as the usage counters say.
// Concurrent reservations anywhere in the cluster are serialised by
// etcd: the transaction commits only if the name, the limits and the
// counters it moves are as they were read, else it is read and tried
// again.
func (m *Member) Reserve(ctx context.Context, r Reservation) error {
	m.inflight(r.Name, true)
	rec := nameRecord{Host: m.cfg.Host, Owner: r.Owner, Family: r.Family, VCPUs: r.VCPUs, Reserved: time.Now().UTC()}
	err := m.retry(ctx, fmt.Sprintf("name %q: too many concurrent reservations in the cluster; try again", r.Name), func(ctx context.Context) (bool, error) {
		return m.putName(ctx, r.Name, rec, func(held nameRecord) error {
			return errdefs.New(errdefs.ErrAlreadyExists, "names are unique across the cluster: pick another name (`labvm list --cluster` shows them all)",
				"instance %q already exists in cluster %s (on host %s, owner %s)", r.Name, m.cfg.Name, held.Host, held.Owner)
		}, func(limits quotaRecord, used usage) error {
			return checkQuota(m.cfg.Name, limits, used, r)
		})
	})
	if err != nil {
		m.inflight(r.Name, false)
		var e *errdefs.Error
		if !errors.As(err, &e) {
			err = m.createRefused(err)
		}
		return err
	}
	return nil
}

// retry runs try until it is done, with a short random pause after each
// lost race; busy is the error when every attempt lost.
func (m *Member) retry(ctx context.Context, busy string, try func(ctx context.Context) (bool, error)) error {
	for attempt := 0; attempt < reserveAttempts; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, opTimeout)
		done, err := try(rctx)
		cancel()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(1+rand.IntN(5*(attempt+1))) * time.Millisecond):
		}
	}
	return errdefs.New(errdefs.ErrConflict, "try again in a moment", "%s", busy)
}

// putName is one attempt to write names/<name> with rec and move the
// usage counters of rec's family by its cores, all in one transaction
// that holds only if the name is still free and the limits and counters
// are as read. taken builds the error for a name already held; check
// (nil: none) judges the limits against the usage before. It reports
// false when the transaction lost a race (try again).
func (m *Member) putName(ctx context.Context, name string, rec nameRecord, taken func(nameRecord) error, check func(quotaRecord, usage) error) (bool, error) {
	totalKey, famKey := m.keys.usageTotal(), m.keys.usageFamily(rec.Family)
	resp, err := m.cli.Txn(ctx).Then(
		clientv3.OpGet(m.keys.name(name)),
		clientv3.OpGet(m.keys.quota()),
		clientv3.OpGet(totalKey),
		clientv3.OpGet(famKey),
	).Commit()
	if err != nil {
		return false, err
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		var held nameRecord
		_ = json.Unmarshal(kvs[0].Value, &held)
		return false, taken(held)
	}
	var limits quotaRecord
	var quotaRev int64
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		if err := json.Unmarshal(kvs[0].Value, &limits); err != nil {
			return false, fmt.Errorf("the cluster's quota record: %w", err)
		}
		quotaRev = kvs[0].ModRevision
	}
	total, fam := counterOf(resp.Responses[2].GetResponseRange().Kvs), counterOf(resp.Responses[3].GetResponseRange().Kvs)
	if total.rev == 0 { // no counters yet: count the names once
		return false, m.recount(ctx)
	}
	if check != nil {
		if err := check(limits, usage{total: total.n, byFamily: map[string]int{rec.Family: fam.n}}); err != nil {
			return false, err
		}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	tr, err := m.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(m.keys.name(name)), "=", 0),
		clientv3.Compare(clientv3.ModRevision(m.keys.quota()), "=", quotaRev),
		total.is(totalKey),
		fam.is(famKey),
	).Then(
		clientv3.OpPut(m.keys.name(name), string(b)),
		total.add(totalKey, rec.VCPUs),
		fam.add(famKey, rec.VCPUs),
	).Commit()
	if err != nil {
		return false, err
	}
	return tr.Succeeded, nil
}

func checkQuota(cluster string, limits quotaRecord, used usage, r Reservation) error {
	if l := limits.Families[r.Family]; l > 0 && used.byFamily[r.Family]+r.VCPUs > l {
		return errdefs.New(errdefs.ErrQuotaExceeded, "the quota counts every host of the cluster: delete an instance of that family anywhere (`labvm list --cluster`), pick a smaller size, or ask an owner to raise it (`labvm quota set --cluster`)",
			"cluster %s's quota of family %s exceeded: %d of %d cores used across its hosts, a %s instance needs %d", cluster, r.Family, used.byFamily[r.Family], l, r.Family, r.VCPUs)
	}
	if limits.Total > 0 && used.total+r.VCPUs > limits.Total {
		return errdefs.New(errdefs.ErrQuotaExceeded, "the quota counts every host of the cluster: delete an instance anywhere (`labvm list --cluster`), or ask an owner to raise it (`labvm quota set --cluster`)",
			"cluster %s's core quota exceeded: %d of %d cores used across its hosts, %d more needed", cluster, used.total, limits.Total, r.VCPUs)
	}
	return nil
}

// createRefused is an etcd failure during a reservation: the create is
// refused, nothing was made.
func (m *Member) createRefused(err error) error {
	return &errdefs.Error{Kind: errdefs.ErrUnavailable, Err: err,
		Msg:  fmt.Sprintf("cluster-wide create refused: the cluster registry (etcd at %s) is unreachable: %v", strings.Join(m.cfg.Endpoints, ", "), err),
		Hint: "names and quota are shared through etcd, so no instance can be created until it answers; the instances already here keep working (start, stop, exec, ssh)"}
}

// Release gives name back when this host holds it. It is done when a
// create fails before its record exists and after a delete; when etcd
// cannot be reached the name stays reserved until this host's next
// session with etcd, which releases names it holds without an instance.
func (m *Member) Release(ctx context.Context, name string) {
	defer m.inflight(name, false)
	rctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := m.releaseIfOurs(rctx, name); err != nil {
		m.log.Warn("release an instance name in the cluster; it is released when etcd answers again", "instance", name, "error", err)
	}
}

// releaseIfOurs deletes names/<name> if this host holds it and gives
// its cores back to the usage counters, in one transaction that compares
// the record's and the counters' revisions.
func (m *Member) releaseIfOurs(ctx context.Context, name string) error {
	return m.retry(ctx, fmt.Sprintf("release %q: too many concurrent changes in the cluster", name), func(ctx context.Context) (bool, error) {
		resp, err := m.cli.Get(ctx, m.keys.name(name))
		if err != nil || len(resp.Kvs) == 0 {
			return true, err
		}
		var n nameRecord
		if json.Unmarshal(resp.Kvs[0].Value, &n) != nil || n.Host != m.cfg.Host {
			return true, nil
		}
		totalKey, famKey := m.keys.usageTotal(), m.keys.usageFamily(n.Family)
		cr, err := m.cli.Txn(ctx).Then(clientv3.OpGet(totalKey), clientv3.OpGet(famKey)).Commit()
		if err != nil {
			return false, err
		}
		total, fam := counterOf(cr.Responses[0].GetResponseRange().Kvs), counterOf(cr.Responses[1].GetResponseRange().Kvs)
		if total.rev == 0 {
			return false, m.recount(ctx)
		}
		tr, err := m.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(m.keys.name(name)), "=", resp.Kvs[0].ModRevision), total.is(totalKey), fam.is(famKey)).
			Then(clientv3.OpDelete(m.keys.name(name)), total.add(totalKey, -n.VCPUs), fam.add(famKey, -n.VCPUs)).Commit()
		if err != nil {
			return false, err
		}
		return tr.Succeeded, nil
	})
}

// inflight marks a name whose create is between its reservation and its
// record (or whose release is pending), so reconcileNames leaves it be.
func (m *Member) inflight(name string, on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if on {
		m.reserving[name]++
		return
	}
	if m.reserving[name] <= 1 {
		delete(m.reserving, name)
	} else {
		m.reserving[name]--
	}
}

func (m *Member) isInflight(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reserving[name] > 0
}

// reconcileNames makes the registry agree with this host's own store at
// the start of each session: names it holds without an instance (a
// delete while etcd was away, a crash between reservation and record)
// are released; its instances without a name (made before the host
// joined) are reserved, and a name another host holds is reported.
func (m *Member) reconcileNames(ctx context.Context, snap Snapshot) error {
	rctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := m.cli.Get(rctx, m.keys.names(), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read the cluster's names: %w", err)
	}
	held := map[string]nameRecord{}
	for _, kv := range resp.Kvs {
		var n nameRecord
		if json.Unmarshal(kv.Value, &n) == nil {
			held[strings.TrimPrefix(string(kv.Key), m.keys.names())] = n
		}
	}
	local := map[string]Instance{}
	for _, inst := range snap.Instances {
		local[inst.Name] = inst
	}
	for name, n := range held {
		if n.Host != m.cfg.Host {
			continue
		}
		if _, ok := local[name]; ok || m.isInflight(name) {
			continue
		}
		if err := m.releaseIfOurs(rctx, name); err != nil {
			return fmt.Errorf("release %s: %w", name, err)
		}
		m.log.Info("released a cluster name this host no longer uses", "instance", name)
	}
	names := make([]string, 0, len(local))
	for name := range local {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		n, ok := held[name]
		switch {
		case ok && n.Host == m.cfg.Host:
		case ok:
			m.log.Error("an instance of this host has a name another host of the cluster holds; rename one of them (delete and create)", "instance", name, "other_host", n.Host)
		default:
			inst := local[name]
			rec := nameRecord{Host: m.cfg.Host, Owner: inst.Owner, Family: inst.Family, VCPUs: inst.VCPUs, Reserved: time.Now().UTC()}
			var other string
			err := m.retry(rctx, "too many concurrent reservations in the cluster", func(ctx context.Context) (bool, error) {
				done, err := m.putName(ctx, name, rec, func(held nameRecord) error {
					other = held.Host
					return nil
				}, nil)
				return done || other != "", err
			})
			if err != nil {
				return fmt.Errorf("reserve %s: %w", name, err)
			}
			if other != "" && other != m.cfg.Host {
				m.log.Error("an instance of this host has a name another host of the cluster holds; rename one of them (delete and create)", "instance", name, "other_host", other)
			}
		}
	}
	// Counters made before they existed, or moved by an older labvmd
	// that did not keep them, are set right from the names.
	if err := m.recount(rctx); err != nil {
		return fmt.Errorf("recount the cluster's usage: %w", err)
	}
	return nil
}

// Quota is the cluster's core quota: its limits and the cores every name
// of the cluster holds.
func (m *Member) Quota(ctx context.Context) (api.Quota, error) {
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	limits, _, err := m.readQuota(rctx)
	if err != nil {
		return api.Quota{}, m.unreachable(err)
	}
	used, err := m.readUsage(rctx)
	if err != nil {
		return api.Quota{}, m.unreachable(err)
	}
	fams := map[string]bool{}
	for f := range limits.Families {
		fams[f] = true
	}
	for f := range used.byFamily {
		fams[f] = true
	}
	out := api.Quota{Total: api.QuotaLine{Used: used.total, Limit: limits.Total}, Families: []api.QuotaLine{}}
	for f := range fams {
		out.Families = append(out.Families, api.QuotaLine{Family: f, Used: used.byFamily[f], Limit: limits.Families[f]})
	}
	sort.Slice(out.Families, func(i, j int) bool { return out.Families[i].Family < out.Families[j].Family })
	return out, nil
}

func (m *Member) readQuota(ctx context.Context) (quotaRecord, int64, error) {
	var q quotaRecord
	resp, err := m.cli.Get(ctx, m.keys.quota())
	if err != nil {
		return q, 0, err
	}
	if len(resp.Kvs) == 0 {
		return q, 0, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &q); err != nil {
		return q, 0, fmt.Errorf("the cluster's quota record: %w", err)
	}
	return q, resp.Kvs[0].ModRevision, nil
}

// SetQuota sets the cluster's limit of a family (or the total, family
// ""); 0 removes it. A limit below what the cluster already uses is
// refused. families are the size families this host knows.
func (m *Member) SetQuota(ctx context.Context, req api.SetQuotaRequest, families []string) (api.Quota, error) {
	if req.Limit < 0 || req.Limit > 1<<20 {
		return api.Quota{}, errdefs.Invalidf("limit %d: want 0 (no limit) or a positive number of cores", req.Limit)
	}
	if req.Family != "" && !contains(families, req.Family) {
		return api.Quota{}, errdefs.Invalidf("unknown VM family %q; `labvm sizes` shows the families", req.Family)
	}
	rctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	for attempt := 0; attempt < reserveAttempts; attempt++ {
		q, rev, err := m.readQuota(rctx)
		if err != nil {
			return api.Quota{}, m.unreachable(err)
		}
		used, err := m.readUsage(rctx)
		if err != nil {
			return api.Quota{}, m.unreachable(err)
		}
		cur := used.total
		if req.Family != "" {
			cur = used.byFamily[req.Family]
		}
		if req.Limit > 0 && req.Limit < cur {
			return api.Quota{}, errdefs.Invalidf("limit %d is below the %d cores the cluster's instances already hold; delete instances first", req.Limit, cur)
		}
		if req.Family == "" {
			q.Total = req.Limit
		} else {
			if q.Families == nil {
				q.Families = map[string]int{}
			}
			if req.Limit == 0 {
				delete(q.Families, req.Family)
			} else {
				q.Families[req.Family] = req.Limit
			}
		}
		b, err := json.Marshal(q)
		if err != nil {
			return api.Quota{}, err
		}
		tr, err := m.cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(m.keys.quota()), "=", rev)).
			Then(clientv3.OpPut(m.keys.quota(), string(b))).Commit()
		if err != nil {
			return api.Quota{}, m.unreachable(err)
		}
		if tr.Succeeded {
			return m.Quota(ctx)
		}
	}
	return api.Quota{}, errors.New("the cluster's quota changed under every attempt; try again")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
