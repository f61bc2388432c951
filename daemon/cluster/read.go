package cluster

import (
	"context"
	"encoding/json"
	"sort"
	"strings"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// view is one consistent read of the cluster: hosts, who is alive, and
// (when asked) every instance.
type view struct {
	hosts     map[string]hostRecord
	alive     map[string]bool
	instances []api.ClusterInstance
	counts    map[string]int
}

// readDepth says how much of the instances a read takes.
type readDepth int

const (
	hostsOnly      readDepth = iota // placement: no instance key at all
	instanceCounts                  // labvm hosts: the keys, counted
	allInstances                    // labvm list --cluster: the records
)

func (m *Member) read(ctx context.Context, depth readDepth) (view, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	withInstances := depth == allInstances
	ops := []clientv3.Op{
		clientv3.OpGet(m.keys.hosts(), clientv3.WithPrefix()),
		clientv3.OpGet(m.keys.alives(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	}
	switch depth {
	case instanceCounts:
		ops = append(ops, clientv3.OpGet(m.keys.instances(), clientv3.WithPrefix(), clientv3.WithKeysOnly()))
	case allInstances:
		ops = append(ops, clientv3.OpGet(m.keys.instances(), clientv3.WithPrefix()))
	}
	resp, err := m.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return view{}, m.unreachable(err)
	}
	v := view{hosts: map[string]hostRecord{}, alive: map[string]bool{}, counts: map[string]int{}}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		var h hostRecord
		if json.Unmarshal(kv.Value, &h) == nil {
			v.hosts[strings.TrimPrefix(string(kv.Key), m.keys.hosts())] = h
		}
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		v.alive[strings.TrimPrefix(string(kv.Key), m.keys.alives())] = true
	}
	if depth == hostsOnly {
		return v, nil
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		host, name, ok := m.keys.instanceKey(string(kv.Key))
		if !ok {
			continue
		}
		v.counts[host]++
		if !withInstances {
			continue
		}
		var r instanceRecord
		if json.Unmarshal(kv.Value, &r) != nil {
			continue
		}
		v.instances = append(v.instances, api.ClusterInstance{Name: name, Host: host, HostState: v.state(host),
			State: r.State, Owner: r.Owner, Size: r.Size, Family: r.Family, VCPUs: r.VCPUs})
	}
	return v, nil
}

func (v view) state(host string) api.HostState {
	if v.alive[host] {
		return api.HostUp
	}
	return api.HostLost
}

func (m *Member) unreachable(err error) error {
	return &errdefs.Error{Kind: errdefs.ErrUnavailable, Err: err,
		Msg:  "the cluster registry (etcd at " + strings.Join(m.cfg.Endpoints, ", ") + ") is unreachable: " + err.Error(),
		Hint: "this host's own instances are still served: `labvm list` without --cluster; ask the cluster's admin about etcd"}
}

// Hosts lists the cluster's hosts, up or lost, as each last published
// itself, by name.
func (m *Member) Hosts(ctx context.Context) ([]api.ClusterHost, error) {
	v, err := m.read(ctx, instanceCounts)
	if err != nil {
		return nil, err
	}
	out := make([]api.ClusterHost, 0, len(v.hosts))
	for name, h := range v.hosts {
		out = append(out, api.ClusterHost{Name: name, State: v.state(name), HostCapacity: h.HostCapacity,
			Instances: v.counts[name], Images: orEmpty(h.Images), SSH: h.SSH, Socket: h.Socket, Version: h.Version, PublishedAt: h.PublishedAt})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Instances lists every instance of the cluster with its host, by host
// then name. A lost host's instances are listed with HostState lost.
func (m *Member) Instances(ctx context.Context) ([]api.ClusterInstance, error) {
	v, err := m.read(ctx, allInstances)
	if err != nil {
		return nil, err
	}
	if v.instances == nil {
		v.instances = []api.ClusterInstance{}
	}
	return v.instances, nil
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
