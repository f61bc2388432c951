package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/test/etcdtest"
)

// benchCluster is 3 hosts of 1,000 instances each, published and with
// their names reserved, on a real etcd.
func benchCluster(b *testing.B) *Member {
	b.Helper()
	e := etcdtest.Start(b, 1)
	cl := fmt.Sprintf("bench%d", time.Now().UnixNano()%100000)
	var members []*Member
	start := time.Now()
	for h := 0; h < 3; h++ {
		host := fmt.Sprintf("node-%d", h)
		src := &fakeHost{}
		var insts []Instance
		for i := 0; i < 1000; i++ {
			insts = append(insts, Instance{Name: fmt.Sprintf("%s-vm%04d", host, i), State: api.StateRunning, Owner: "alice", Size: "Standard_B1s", Family: "fam", VCPUs: 1})
		}
		src.set(insts...)
		cert, key := e.PKI.Issue(b, host)
		m, err := New(Config{Name: cl, Host: host, Endpoints: e.Endpoints(), CA: e.PKI.CAFile, Cert: cert, Key: key, TTL: 5 * time.Second}, src.source, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { m.Run(ctx); close(done) }()
		b.Cleanup(func() { cancel(); <-done; _ = m.Close() })
		members = append(members, m)
	}
	for {
		hosts, err := members[0].Hosts(context.Background())
		n := 0
		for _, h := range hosts {
			n += h.Instances
		}
		if err == nil && n == 3000 {
			break
		}
		if time.Since(start) > 2*time.Minute {
			b.Fatalf("3,000 instances not published after 2 minutes: %d, %v", n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Logf("3 hosts published 3,000 instances and reserved their names in %v", time.Since(start).Round(time.Millisecond))
	return members[0]
}

// BenchmarkClusterList is `labvm list --cluster`'s read over 3 × 1,000.
func BenchmarkClusterList(b *testing.B) {
	m := benchCluster(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		list, err := m.Instances(ctx)
		if err != nil || len(list) != 3000 {
			b.Fatalf("%d instances, %v", len(list), err)
		}
	}
}

// BenchmarkReserve is a create's reservation next to 3,000 names, without
// a quota that applies and with one: both read and move the same usage
// counters, so neither reads every name.
func BenchmarkReserve(b *testing.B) {
	m := benchCluster(b)
	ctx := context.Background()
	for _, withQuota := range []bool{false, true} {
		b.Run(fmt.Sprintf("quota=%v", withQuota), func(b *testing.B) {
			limit := 0
			if withQuota {
				limit = 100000
			}
			if _, err := m.SetQuota(ctx, api.SetQuotaRequest{Family: "fam", Limit: limit}, []string{"fam"}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				name := fmt.Sprintf("bench-%d", i)
				if err := m.Reserve(ctx, Reservation{Name: name, Owner: "alice", Family: "fam", VCPUs: 1}); err != nil {
					b.Fatal(err)
				}
				m.Release(ctx, name)
			}
		})
	}
}
