package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/test/etcdtest"
)

func res(name string, vcpus int) Reservation {
	return Reservation{Name: name, Owner: "alice", Family: "fam", VCPUs: vcpus}
}

func TestNamesAndQuotaAcrossHosts(t *testing.T) {
	e := etcdtest.Start(t, 1)
	cl := fmt.Sprintf("names%d", time.Now().UnixNano()%100000)
	ma, err := New(testConfig(t, e, cl, "node-a"), (&fakeHost{}).source, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ma.Close() }()
	mb, err := New(testConfig(t, e, cl, "node-b"), (&fakeHost{}).source, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = mb.Close() }()
	ctx := context.Background()

	t.Run("a name is unique across hosts", func(t *testing.T) {
		if err := ma.Reserve(ctx, res("dev1", 1)); err != nil {
			t.Fatal(err)
		}
		err := mb.Reserve(ctx, res("dev1", 1))
		if !errors.Is(err, errdefs.ErrAlreadyExists) || !strings.Contains(err.Error(), "on host node-a") {
			t.Fatalf("the same name on node-b: %v", err)
		}
		mb.Release(ctx, "dev1") // not node-b's: nothing happens
		if err := mb.Reserve(ctx, res("dev1", 1)); !errors.Is(err, errdefs.ErrAlreadyExists) {
			t.Fatalf("node-b released node-a's name: %v", err)
		}
		ma.Release(ctx, "dev1")
		if err := mb.Reserve(ctx, res("dev1", 1)); err != nil {
			t.Fatalf("a released name cannot be taken: %v", err)
		}
		mb.Release(ctx, "dev1")
	})

	t.Run("the quota counts every host", func(t *testing.T) {
		if _, err := ma.SetQuota(ctx, api.SetQuotaRequest{Family: "nope", Limit: 3}, []string{"fam"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("unknown family accepted: %v", err)
		}
		if _, err := ma.SetQuota(ctx, api.SetQuotaRequest{Family: "fam", Limit: 3}, []string{"fam"}); err != nil {
			t.Fatal(err)
		}
		if err := ma.Reserve(ctx, res("q1", 2)); err != nil {
			t.Fatal(err)
		}
		if err := mb.Reserve(ctx, res("q2", 1)); err != nil {
			t.Fatal(err)
		}
		err := mb.Reserve(ctx, res("q3", 1))
		if !errors.Is(err, errdefs.ErrQuotaExceeded) || !strings.Contains(err.Error(), "3 of 3 cores used across its hosts") {
			t.Fatalf("over the cluster's quota: %v", err)
		}
		if _, err := mb.SetQuota(ctx, api.SetQuotaRequest{Family: "fam", Limit: 2}, []string{"fam"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("a limit below use accepted: %v", err)
		}
		q, err := mb.Quota(ctx)
		if err != nil || q.Total.Used != 3 || len(q.Families) != 1 || q.Families[0].Used != 3 || q.Families[0].Limit != 3 {
			t.Fatalf("Quota = %+v, %v", q, err)
		}
		ma.Release(ctx, "q1")
		if err := mb.Reserve(ctx, res("q3", 1)); err != nil {
			t.Fatalf("after a release: %v", err)
		}
		for _, n := range []string{"q2", "q3"} {
			mb.Release(ctx, n)
		}
	})

	t.Run("concurrent creates on two hosts never overrun the quota", func(t *testing.T) {
		if _, err := ma.SetQuota(ctx, api.SetQuotaRequest{Family: "fam", Limit: 0}, []string{"fam"}); err != nil {
			t.Fatal(err)
		}
		if _, err := ma.SetQuota(ctx, api.SetQuotaRequest{Limit: 5}, nil); err != nil {
			t.Fatal(err)
		}
		var ok, over atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 12; i++ {
			m := ma
			if i%2 == 1 {
				m = mb
			}
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				switch err := m.Reserve(ctx, res(fmt.Sprintf("c%d", i), 1)); {
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
		if ok.Load() != 5 || over.Load() != 7 {
			t.Fatalf("%d reserved and %d refused; want 5 and 7 under a total of 5", ok.Load(), over.Load())
		}
	})

	t.Run("etcd down: creates are refused clearly", func(t *testing.T) {
		e.Members[0].Kill()
		defer func() { e.Members[0].Restart(t); e.WaitHealthy(t, 30*time.Second) }()
		err := ma.Reserve(ctx, res("down1", 1))
		if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "cluster-wide create refused") {
			t.Fatalf("reserve with etcd down: %v", err)
		}
		if h := errdefs.ToAPI(err).Hint; !strings.Contains(h, "keep working") {
			t.Fatalf("hint %q", h)
		}
	})
}

func TestNamesReconciledWithTheHost(t *testing.T) {
	e := etcdtest.Start(t, 1)
	cl := fmt.Sprintf("rec%d", time.Now().UnixNano()%100000)
	host := &fakeHost{}
	host.set(Instance{Name: "old-vm", State: api.StateStopped, Owner: "bob", Family: "fam", VCPUs: 2})
	// A name this host holds but no longer has (deleted while etcd was
	// away), and one another host holds.
	other, err := New(testConfig(t, e, cl, "node-b"), (&fakeHost{}).source, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close() }()
	ctx := context.Background()
	if err := other.Reserve(ctx, res("theirs", 1)); err != nil {
		t.Fatal(err)
	}
	pre, err := New(testConfig(t, e, cl, "node-a"), host.source, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pre.Reserve(ctx, res("gone", 1)); err != nil {
		t.Fatal(err)
	}
	_ = pre.Close()

	m, _ := runMember(t, testConfig(t, e, cl, "node-a"), host.source)
	eventually(t, 10*time.Second, func() error {
		q, err := m.Quota(ctx)
		if err != nil {
			return err
		}
		// theirs (1) + old-vm (2); gone released.
		if q.Total.Used != 3 {
			return fmt.Errorf("cores held %d, want 3 (old-vm reserved, gone released)", q.Total.Used)
		}
		return nil
	})
	if err := other.Reserve(ctx, res("gone", 1)); err != nil {
		t.Fatalf("gone was not released: %v", err)
	}
	if err := other.Reserve(ctx, res("old-vm", 1)); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("old-vm was not reserved for node-a: %v", err)
	}
}
