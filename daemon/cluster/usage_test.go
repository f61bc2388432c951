package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/test/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// counters reads usage/total and usage/family/<fam> as stored, and the
// sum of every name's cores: what they must equal.
func counters(t *testing.T, m *Member, fam string) (total, family, sumTotal, sumFamily int) {
	t.Helper()
	ctx := context.Background()
	get := func(key string) int {
		resp, err := m.cli.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return -1
		}
		n, err := strconv.Atoi(string(resp.Kvs[0].Value))
		if err != nil {
			t.Fatalf("%s = %q", key, resp.Kvs[0].Value)
		}
		return n
	}
	resp, err := m.cli.Get(ctx, m.keys.names(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	u := m.countNames(resp.Kvs)
	return get(m.keys.usageTotal()), get(m.keys.usageFamily(fam)), u.total, u.byFamily[fam]
}

func checkCounters(t *testing.T, m *Member, fam string) {
	t.Helper()
	total, family, sumTotal, sumFamily := counters(t, m, fam)
	if total != sumTotal || family != sumFamily {
		t.Fatalf("counters total %d, %s %d; the names hold %d and %d", total, fam, family, sumTotal, sumFamily)
	}
}

func TestUsageCounters(t *testing.T) {
	e := etcdtest.Start(t, 1)
	cl := fmt.Sprintf("usage%d", time.Now().UnixNano()%100000)
	var members []*Member
	for _, h := range []string{"node-a", "node-b", "node-c"} {
		m, err := New(testConfig(t, e, cl, h), (&fakeHost{}).source, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = m.Close() }()
		members = append(members, m)
	}
	ma := members[0]
	ctx := context.Background()

	t.Run("names held before the counters existed are counted once, then the counters move", func(t *testing.T) {
		// What a cluster of an older labvmd holds: names, no counters.
		for i, vcpus := range []int{2, 1, 4} {
			b, _ := json.Marshal(nameRecord{Host: "node-old", Owner: "bob", Family: "fam", VCPUs: vcpus})
			if _, err := ma.cli.Put(ctx, ma.keys.name(fmt.Sprintf("old%d", i)), string(b)); err != nil {
				t.Fatal(err)
			}
		}
		b, _ := json.Marshal(nameRecord{Host: "node-old", Owner: "bob", Family: "other", VCPUs: 3})
		if _, err := ma.cli.Put(ctx, ma.keys.name("old-other"), string(b)); err != nil {
			t.Fatal(err)
		}
		if total, _, _, _ := counters(t, ma, "fam"); total != -1 {
			t.Fatalf("usage/total exists before any reservation: %d", total)
		}
		if _, err := ma.SetQuota(ctx, api.SetQuotaRequest{Family: "fam", Limit: 9}, []string{"fam", "other"}); err != nil {
			t.Fatal(err)
		}
		checkCounters(t, ma, "fam")
		// fam holds 7 of 9: a 3-core create is over, a 2-core one fits.
		err := members[1].Reserve(ctx, res("n1", 3))
		if !errors.Is(err, errdefs.ErrQuotaExceeded) || !strings.Contains(err.Error(), "7 of 9 cores used") {
			t.Fatalf("3 more cores over 7 of 9: %v", err)
		}
		if err := members[1].Reserve(ctx, res("n1", 2)); err != nil {
			t.Fatal(err)
		}
		checkCounters(t, ma, "fam")
		q, err := members[2].Quota(ctx)
		if err != nil || q.Total.Used != 12 {
			t.Fatalf("Quota = %+v, %v; want 12 cores used (9 fam + 3 other)", q, err)
		}
		members[1].Release(ctx, "n1")
		checkCounters(t, ma, "fam")
		if _, err := ma.cli.Delete(ctx, ma.keys.names(), clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
		if err := ma.recount(ctx); err != nil {
			t.Fatal(err)
		}
		if total, family, _, _ := counters(t, ma, "fam"); total != 0 || family != 0 {
			t.Fatalf("after every name went and a recount: total %d, fam %d", total, family)
		}
	})

	t.Run("wrong counters are set right by a recount", func(t *testing.T) {
		if err := ma.Reserve(ctx, res("r1", 2)); err != nil {
			t.Fatal(err)
		}
		if _, err := ma.cli.Put(ctx, ma.keys.usageTotal(), "999"); err != nil {
			t.Fatal(err)
		}
		if _, err := ma.cli.Put(ctx, ma.keys.usageFamily("gone"), "5"); err != nil {
			t.Fatal(err)
		}
		if err := ma.recount(ctx); err != nil {
			t.Fatal(err)
		}
		checkCounters(t, ma, "fam")
		checkCounters(t, ma, "gone")
		ma.Release(ctx, "r1")
		checkCounters(t, ma, "fam")
	})

	t.Run("concurrent creates on three hosts never overrun a family's quota", func(t *testing.T) {
		if _, err := ma.SetQuota(ctx, api.SetQuotaRequest{Family: "fam", Limit: 7}, []string{"fam"}); err != nil {
			t.Fatal(err)
		}
		var ok, over atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 15; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				switch err := members[i%3].Reserve(ctx, res(fmt.Sprintf("c%d", i), 2)); {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, errdefs.ErrQuotaExceeded):
					over.Add(1)
				default:
					t.Errorf("reserve c%d: %v", i, err)
				}
			}(i)
		}
		wg.Wait()
		if ok.Load() != 3 || over.Load() != 12 {
			t.Fatalf("%d reserved and %d refused; want 3 (6 of 7 cores) and 12", ok.Load(), over.Load())
		}
		checkCounters(t, ma, "fam")
		if _, family, _, _ := counters(t, ma, "fam"); family != 6 {
			t.Fatalf("fam counter %d, want 6", family)
		}
	})

	t.Run("concurrent creates and deletes without a quota keep the counters exact", func(t *testing.T) {
		if _, err := ma.SetQuota(ctx, api.SetQuotaRequest{Family: "fam", Limit: 0}, []string{"fam"}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := 0; i < 12; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				m := members[i%3]
				name := fmt.Sprintf("d%d", i)
				if err := m.Reserve(ctx, res(name, 1+i%3)); err != nil {
					t.Errorf("reserve %s: %v", name, err)
					return
				}
				if i%2 == 0 {
					m.Release(ctx, name)
				}
			}(i)
		}
		wg.Wait()
		checkCounters(t, ma, "fam")
		// 6 left of d0..d11 (the odd ones), 1+i%3 cores each, and c*'s 6.
		want := 6
		for i := 1; i < 12; i += 2 {
			want += 1 + i%3
		}
		if total, _, _, _ := counters(t, ma, "fam"); total != want {
			t.Fatalf("total counter %d, want %d", total, want)
		}
	})

}
