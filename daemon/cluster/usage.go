package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The cluster's usage is kept in counters beside the names: usage/total
// and usage/family/<family>, the cores the names hold. Every change of
// names/ (a reservation, a release, a reconcile) puts the counters it
// moves in the same transaction, which commits only if those counters'
// mod revisions are still the ones it read; so a quota check reads three
// keys, not every name, and two creates that race on the same counter
// cannot both commit. A cluster whose counters are absent (made before
// they existed) or wrong is recounted from the names once per session
// (recount), in a transaction that holds only if no name and no counter
// changed since they were read.

// counter is one usage key as read: its count, and its mod revision (0
// when the key is absent).
type counter struct {
	n   int
	rev int64
}

func counterOf(kvs []*mvccpb.KeyValue) counter {
	if len(kvs) == 0 {
		return counter{}
	}
	n, _ := strconv.Atoi(string(kvs[0].Value))
	return counter{n: n, rev: kvs[0].ModRevision}
}

// is compares the counter's key with the revision it was read at.
func (c counter) is(key string) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(key), "=", c.rev)
}

// add puts the counter moved by d (never below 0).
func (c counter) add(key string, d int) clientv3.Op {
	return clientv3.OpPut(key, strconv.Itoa(max(c.n+d, 0)))
}

// usage is the cores every name of the cluster holds.
type usage struct {
	total    int
	byFamily map[string]int
}

// readUsage reads the counters; absent, it recounts them first.
func (m *Member) readUsage(ctx context.Context) (usage, error) {
	for attempt := 0; attempt < 2; attempt++ {
		resp, err := m.cli.Get(ctx, m.keys.usage(), clientv3.WithPrefix())
		if err != nil {
			return usage{}, err
		}
		u := usage{byFamily: map[string]int{}}
		found := false
		for _, kv := range resp.Kvs {
			n, _ := strconv.Atoi(string(kv.Value))
			switch key := string(kv.Key); {
			case key == m.keys.usageTotal():
				u.total, found = n, true
			case strings.HasPrefix(key, m.keys.usageFamilies()):
				if n != 0 {
					u.byFamily[strings.TrimPrefix(key, m.keys.usageFamilies())] = n
				}
			}
		}
		if found {
			return u, nil
		}
		if err := m.recount(ctx); err != nil {
			return usage{}, err
		}
	}
	return usage{}, fmt.Errorf("the cluster's usage counters are still absent after a recount")
}

// countNames sums the cores of every name held (what the counters must
// say).
func (m *Member) countNames(kvs []*mvccpb.KeyValue) usage {
	u := usage{byFamily: map[string]int{}}
	for _, kv := range kvs {
		var n nameRecord
		if json.Unmarshal(kv.Value, &n) == nil {
			u.total += n.VCPUs
			u.byFamily[n.Family] += n.VCPUs
		}
	}
	return u
}

// recount sets the counters to the sum of the names when they differ
// (or are absent). It commits only if no name and no counter changed
// since they were read; a lost race is left to the winner, which keeps
// the counters in step.
func (m *Member) recount(ctx context.Context) error {
	resp, err := m.cli.Txn(ctx).Then(
		clientv3.OpGet(m.keys.names(), clientv3.WithPrefix()),
		clientv3.OpGet(m.keys.usage(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return err
	}
	want := m.countNames(resp.Responses[0].GetResponseRange().Kvs)
	have := map[string]string{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		have[string(kv.Key)] = string(kv.Value)
	}
	var ops []clientv3.Op
	set := func(key string, n int) {
		if v, ok := have[key]; !ok || v != strconv.Itoa(n) {
			ops = append(ops, clientv3.OpPut(key, strconv.Itoa(n)))
		}
	}
	set(m.keys.usageTotal(), want.total)
	for f, n := range want.byFamily {
		set(m.keys.usageFamily(f), n)
	}
	for key := range have {
		if f, ok := strings.CutPrefix(key, m.keys.usageFamilies()); ok && want.byFamily[f] == 0 {
			set(key, 0)
		}
	}
	if len(ops) == 0 {
		return nil
	}
	rev := resp.Header.Revision
	tr, err := m.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(m.keys.names()), "<", rev+1).WithPrefix(),
		clientv3.Compare(clientv3.ModRevision(m.keys.usage()), "<", rev+1).WithPrefix(),
	).Then(ops...).Commit()
	if err != nil {
		return err
	}
	if tr.Succeeded {
		m.log.Info("recounted the cluster's usage from its names", "cores", want.total)
	}
	return nil
}
