package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/test/etcdtest"
	"github.com/labvm/labvm/vm"
)

// fakeHost is a Source whose instances the test changes.
type fakeHost struct {
	mu    sync.Mutex
	insts []Instance
}

func (f *fakeHost) set(insts ...Instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.insts = insts
}

func (f *fakeHost) source() (Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	used := 0
	for _, i := range f.insts {
		used += i.VCPUs
	}
	return Snapshot{Capacity: api.HostCapacity{Cores: 8, CoresUsed: used, MemoryTotal: 32 << 30, MemoryAvailable: 16 << 30, DiskFree: 100 << 30},
		Instances: append([]Instance(nil), f.insts...)}, nil
}

func testConfig(t *testing.T, e *etcdtest.Cluster, name, host string) Config {
	cert, key := e.PKI.Issue(t, host)
	return Config{Name: name, Host: host, Endpoints: e.Endpoints(), CA: e.PKI.CAFile, Cert: cert, Key: key, TTL: 2 * time.Second, Version: "test"}
}

// runMember starts a member; the returned func stops it (revoking its
// lease) and waits for it.
func runMember(t *testing.T, cfg Config, src Source) (*Member, func()) {
	t.Helper()
	m, err := New(cfg, src, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done; _ = m.Close() }) }
	t.Cleanup(stop)
	return m, stop
}

// eventually retries check until it returns nil or within passes.
func eventually(t *testing.T, within time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hostStates(hosts []api.ClusterHost) string {
	var b strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&b, "%s=%s/%d ", h.Name, h.State, h.Instances)
	}
	return strings.TrimSpace(b.String())
}

func instanceList(insts []api.ClusterInstance) string {
	var b strings.Builder
	for _, i := range insts {
		fmt.Fprintf(&b, "%s@%s(%s,%s) ", i.Name, i.Host, i.HostState, i.State)
	}
	return strings.TrimSpace(b.String())
}

func TestMembersPublishAndSeeEachOther(t *testing.T) {
	e := etcdtest.Start(t, 1)
	cl := "c" + fmt.Sprint(time.Now().UnixNano()%100000)
	a, b := &fakeHost{}, &fakeHost{}
	a.set(Instance{Name: "alice-dev", State: api.StateRunning, Owner: "alice", Size: "Standard_D2_v3", Family: "Dv3", VCPUs: 2})
	b.set(Instance{Name: "bob-dev", State: api.StateStopped, Owner: "bob", Size: "Standard_B1s", Family: "B", VCPUs: 1},
		Instance{Name: "bob-gpu", State: api.StateRunning, Owner: "bob", Size: "Standard_B1s", Family: "B", VCPUs: 1})
	ma, _ := runMember(t, testConfig(t, e, cl, "node-a"), a.source)
	mb, stopB := runMember(t, testConfig(t, e, cl, "node-b"), b.source)
	ctx := context.Background()

	t.Run("hosts and instances of both", func(t *testing.T) {
		eventually(t, 10*time.Second, func() error {
			hosts, err := ma.Hosts(ctx)
			if err != nil {
				return err
			}
			if got := hostStates(hosts); got != "node-a=up/1 node-b=up/2" {
				return fmt.Errorf("hosts %s", got)
			}
			if hosts[1].Cores != 8 || hosts[1].CoresUsed != 2 || hosts[1].MemoryAvailable != 16<<30 || hosts[1].Version != "test" {
				return fmt.Errorf("node-b's capacity %+v", hosts[1])
			}
			return nil
		})
		insts, err := mb.Instances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := instanceList(insts); got != "alice-dev@node-a(up,Running) bob-dev@node-b(up,Stopped) bob-gpu@node-b(up,Running)" {
			t.Fatalf("instances %s", got)
		}
		if insts[0].Owner != "alice" || insts[0].Size != "Standard_D2_v3" || insts[0].VCPUs != 2 {
			t.Fatalf("alice-dev published as %+v", insts[0])
		}
	})

	t.Run("a change is republished when told", func(t *testing.T) {
		b.set(Instance{Name: "bob-dev", State: api.StateRunning, Owner: "bob", Size: "Standard_B1s", Family: "B", VCPUs: 1})
		mb.Changed()
		eventually(t, 5*time.Second, func() error {
			insts, err := ma.Instances(ctx)
			if err != nil {
				return err
			}
			if got := instanceList(insts); got != "alice-dev@node-a(up,Running) bob-dev@node-b(up,Running)" {
				return fmt.Errorf("instances %s", got)
			}
			return nil
		})
	})

	t.Run("a stopped host is lost at once, its instances kept", func(t *testing.T) {
		stopB()
		hosts, err := ma.Hosts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := hostStates(hosts); got != "node-a=up/1 node-b=lost/1" {
			t.Fatalf("hosts %s", got)
		}
		insts, err := ma.Instances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := instanceList(insts); got != "alice-dev@node-a(up,Running) bob-dev@node-b(lost,Running)" {
			t.Fatalf("instances %s", got)
		}
	})

	t.Run("a host that comes back reconciles from its own state", func(t *testing.T) {
		b.set() // bob-dev was deleted while node-b was away from the cluster
		_, _ = runMember(t, testConfig(t, e, cl, "node-b"), b.source)
		eventually(t, 10*time.Second, func() error {
			insts, err := ma.Instances(ctx)
			if err != nil {
				return err
			}
			hosts, err := ma.Hosts(ctx)
			if err != nil {
				return err
			}
			if got := instanceList(insts) + " | " + hostStates(hosts); got != "alice-dev@node-a(up,Running) | node-a=up/1 node-b=up/0" {
				return fmt.Errorf("%s", got)
			}
			return nil
		})
	})
}

func TestEtcdDownAndBack(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a := &fakeHost{}
	a.set(Instance{Name: "alice-dev", State: api.StateRunning, Owner: "alice", Size: "Standard_B1s", Family: "B", VCPUs: 1})
	m, _ := runMember(t, testConfig(t, e, "down", "node-a"), a.source)
	ctx := context.Background()
	eventually(t, 10*time.Second, func() error {
		if ok, err := m.Connected(); !ok {
			return fmt.Errorf("not connected: %v", err)
		}
		return nil
	})

	e.Members[0].Kill()
	start := time.Now()
	_, err := m.Hosts(ctx)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("Hosts with etcd down: %v; want Unavailable", err)
	}
	if d := time.Since(start); d > readTimeout+2*time.Second {
		t.Fatalf("Hosts took %v with etcd down", d)
	}
	if hint := errdefs.ToAPI(err).Hint; !strings.Contains(hint, "without --cluster") {
		t.Fatalf("hint %q", hint)
	}
	eventually(t, 15*time.Second, func() error {
		if ok, _ := m.Connected(); ok {
			return errors.New("still connected with etcd down")
		}
		return nil
	})

	// Changed while etcd is away; published once it returns.
	a.set(Instance{Name: "alice-dev", State: api.StateStopped, Owner: "alice", Size: "Standard_B1s", Family: "B", VCPUs: 1})
	e.Members[0].Restart(t)
	e.WaitHealthy(t, 30*time.Second)
	eventually(t, 30*time.Second, func() error {
		insts, err := m.Instances(ctx)
		if err != nil {
			return err
		}
		if got := instanceList(insts); got != "alice-dev@node-a(up,Stopped)" {
			return fmt.Errorf("instances %s", got)
		}
		return nil
	})
}

func TestMutualTLSIsRequired(t *testing.T) {
	e := etcdtest.Start(t, 1)
	cfg := testConfig(t, e, "tls", "node-a")
	cfg.Cert, cfg.Key = e.PKI.IssueForeign(t, "intruder")
	m, err := New(cfg, (&fakeHost{}).source, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Close() }()
	if _, err := m.Hosts(context.Background()); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("a certificate of another CA was accepted: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Name: "lab1", Host: "node3", Endpoints: []string{"https://etcd1:2379"}, CA: "ca", Cert: "c", Key: "k"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"plain http", func(c *Config) { c.Endpoints = []string{"http://etcd1:2379"} }, "plain http"},
		{"no endpoint", func(c *Config) { c.Endpoints = nil }, "no etcd"},
		{"no cert", func(c *Config) { c.Cert = "" }, "mutual TLS"},
		{"bad name", func(c *Config) { c.Name = "Lab/1" }, "cluster name"},
		{"bad host", func(c *Config) { c.Host = "" }, "cluster host"},
		{"short TTL", func(c *Config) { c.TTL = time.Second }, "TTL"},
		{"ssh not ssh://", func(c *Config) { c.SSH = "http://node3" }, "cluster ssh"},
		{"ssh with a path", func(c *Config) { c.SSH = "ssh://node3/x" }, "cluster ssh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.change(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestParseMeminfo(t *testing.T) {
	total, avail, err := parseMeminfo([]byte("MemTotal:       32768 kB\nMemFree: 1 kB\nMemAvailable:   16384 kB\n"))
	if err != nil || total != 32768*1024 || avail != 16384*1024 {
		t.Fatalf("parseMeminfo = %d, %d, %v", total, avail, err)
	}
	if _, _, err := parseMeminfo([]byte("MemTotal: 1 kB\n")); err == nil {
		t.Fatal("meminfo without MemAvailable accepted")
	}
}

func TestPlacement(t *testing.T) {
	e := etcdtest.Start(t, 1)
	cl := fmt.Sprintf("place%d", time.Now().UnixNano()%100000)
	type host struct {
		name   string
		used   int
		memGiB int64
		images []string
	}
	hosts := []host{
		{"busy", 6, 16, []string{"debian"}},
		{"idle", 0, 16, []string{"debian"}},
		{"small", 0, 1, []string{"debian", "ubuntu"}},
		{"other", 0, 16, []string{"rocky"}},
	}
	var members []*Member
	for _, h := range hosts {
		h := h
		src := func() (Snapshot, error) {
			return Snapshot{Capacity: api.HostCapacity{Cores: 8, CoresUsed: h.used, MemoryTotal: 32 << 30, MemoryAvailable: h.memGiB << 30, DiskFree: 1 << 40}, Images: h.images}, nil
		}
		m, _ := runMember(t, testConfig(t, e, cl, h.name), src)
		members = append(members, m)
	}
	ctx := context.Background()
	eventually(t, 10*time.Second, func() error {
		hs, err := members[0].Hosts(ctx)
		if err != nil || len(hs) != 4 {
			return fmt.Errorf("hosts %v, %v", hs, err)
		}
		return nil
	})
	small := vm.Size{Name: "S", Family: "f", VCPUs: 1, MemoryMiB: 512}
	big := vm.Size{Name: "B", Family: "f", VCPUs: 4, MemoryMiB: 4096}
	tests := []struct {
		image string
		size  vm.Size
		want  string // host, or error text
	}{
		{"debian", small, "host idle"},        // idle and small tie on free cores; idle has more memory
		{"debian", big, "host idle"},          // small lacks the memory
		{"ubuntu", small, "host small"},       // the only one with the image
		{"ubuntu", big, "4096 MiB"},           // the only one with the image lacks memory
		{"arch", small, "has image \"arch\""}, // nobody has it
	}
	for _, tt := range tests {
		p, err := members[0].Place(ctx, tt.image, tt.size)
		got := "host " + p.Host
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, tt.want) {
			t.Errorf("Place(%s, %s) = %q, want %q", tt.image, tt.size.Name, got, tt.want)
		}
	}
	p, err := members[1].Place(ctx, "debian", small)
	if err != nil || !p.Local || p.SSH != "ssh://idle" {
		t.Fatalf("Place from idle itself = %+v, %v; want local, ssh://idle", p, err)
	}
}

// TestHostJSONIsFlat: the capacity both the etcd record and the API's
// ClusterHost embed must keep its fields at their top level, under the
// names hosts of other labvmd versions read and write.
func TestHostJSONIsFlat(t *testing.T) {
	capa := api.HostCapacity{Cores: 8, CoresUsed: 2, MemoryTotal: 32 << 30, MemoryAvailable: 16 << 30, DiskFree: 1 << 40}
	tests := []struct {
		name string
		v    any
		want []string
	}{
		{"etcd record", hostRecord{Name: "h1", HostCapacity: capa, Instances: 1, Images: []string{"img"}, SSH: "ssh://h1", Socket: "/s", Version: "v"},
			[]string{"name", "cores", "cores_used", "memory_total", "memory_available", "disk_free", "instances", "images", "ssh", "socket", "version", "published_at"}},
		{"API host", api.ClusterHost{Name: "h1", State: api.HostUp, HostCapacity: capa, Images: []string{}},
			[]string{"name", "state", "cores", "cores_used", "memory_total", "memory_available", "disk_free", "instances", "images", "ssh", "socket", "version", "published_at"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]json.RawMessage
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			keys := slices.Sorted(maps.Keys(got))
			want := slices.Sorted(slices.Values(tt.want))
			if !slices.Equal(keys, want) {
				t.Fatalf("keys %v, want %v", keys, want)
			}
			if string(got["memory_available"]) != "17179869184" || string(got["cores_used"]) != "2" {
				t.Fatalf("capacity not at the top level: %s", b)
			}
		})
	}
	// An old labvmd's record reads back into the new one.
	var rec hostRecord
	if err := json.Unmarshal([]byte(`{"name":"h0","cores":4,"cores_used":1,"memory_total":1,"memory_available":2,"disk_free":3,"instances":0,"version":"old","published_at":"2026-01-01T00:00:00Z"}`), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.HostCapacity != (api.HostCapacity{Cores: 4, CoresUsed: 1, MemoryTotal: 1, MemoryAvailable: 2, DiskFree: 3}) {
		t.Fatalf("read %+v", rec.HostCapacity)
	}
}
