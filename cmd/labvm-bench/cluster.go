package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/test/etcdtest"
)

// benchTB lets the benchmark use test/etcdtest: a failure panics with an
// error clusterFigures recovers, cleanups join the run's.
type benchTB struct{ e *env }

type benchFailure struct{ err error }

func (benchTB) Helper()                     {}
func (b benchTB) Fatal(args ...any)         { panic(benchFailure{fmt.Errorf("%s", fmt.Sprint(args...))}) }
func (b benchTB) Fatalf(f string, a ...any) { panic(benchFailure{fmt.Errorf(f, a...)}) }
func (b benchTB) Logf(f string, a ...any)   { b.e.logf(f, a...) }
func (b benchTB) Cleanup(f func())          { b.e.onCleanup(f) }
func (b benchTB) Failed() bool              { return false }
func (b benchTB) TempDir() string {
	dir, err := os.MkdirTemp(b.e.work, "etcd-")
	if err != nil {
		b.Fatal(err)
	}
	return dir
}

// clusterFigures: three labvmd on the test driver sharing a cluster
// through a real etcd (one member, mutual TLS), each with about
// o.cluster instances; `labvm list --cluster` over all of them; and a
// create that is placed (placement read + name reservation) against a
// create on a host of its own, in the same run.
func (e *env) clusterFigures() (err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(benchFailure)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("cluster figures: %w", f.err)
		}
	}()
	tb := benchTB{e}
	etcd := etcdtest.StartOn(tb, 1, net.IPv4(127, 0, 0, 1))
	name := "bench" + e.id
	runs := e.o.cmdRuns
	var hosts []*daemonProc
	for i, kind := range []string{"x-cluster", "y-cluster", "z-cluster"} {
		host := fmt.Sprintf("%s-%d", name, i)
		cert, key := etcd.PKI.Issue(tb, host)
		cfg := fmt.Sprintf("cluster: {name: %s, host: %s, ttl: 10s, ca: %s, cert: %s, key: %s, etcd: [%s]}\n",
			name, host, etcd.PKI.CAFile, cert, key, strings.Join(etcd.Endpoints(), ", "))
		path := filepath.Join(e.work, kind+".yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			return err
		}
		d, err := e.startDaemon(kind, 16, "--config", path, "--libvirt-uri", "test:///default", "--ready-probe", "none")
		if err != nil {
			return err
		}
		if _, err := d.importImage(e.image); err != nil {
			return err
		}
		hosts = append(hosts, d)
	}
	single, err := e.startDaemon("w-single", 24, "--libvirt-uri", "test:///default", "--ready-probe", "none")
	if err != nil {
		return err
	}
	if _, err := single.importImage(e.image); err != nil {
		return err
	}

	// The first host holds fewer instances than the others throughout,
	// so every placed create lands on it (the bench has no ssh).
	counts := []int{e.o.cluster, e.o.cluster + 2*runs, e.o.cluster + 2*runs}
	e.logf("cluster: %d, %d and %d creates on three hosts", counts[0], counts[1], counts[2])
	ctx := context.Background()
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, d := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < counts[i] && errs[i] == nil; j++ {
				errs[i] = createAndWait(ctx, d, fmt.Sprintf("lvbench-c%d-%04d", i, j), e.o.size)
			}
		}()
	}
	wg.Wait()
	total := counts[0] + counts[1] + counts[2]
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := hosts[0].cli("hosts", "-o", "json")
		var list []api.ClusterHost
		n := 0
		if err == nil && json.Unmarshal([]byte(out), &list) == nil {
			for _, h := range list {
				n += h.Instances
			}
		}
		if n == total {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: %d of %d instances published after 2 minutes (%v)", n, total, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	r := e.report
	r.cluster = true
	r.clusterN = total
	for i := 0; i < runs; i++ {
		t, err := hosts[0].timedCLI("list", "--cluster")
		if err != nil {
			return err
		}
		r.clusterList.add(t)
		if t, err = hosts[0].timedCLI("list"); err != nil {
			return err
		}
		r.clusterLocalList.add(t)
	}
	e.logf("cluster: timing creates: placed, pinned here, on a host of its own")
	for i := 0; i < runs; i++ {
		t, err := hosts[0].timedCLI("create", fmt.Sprintf("lvbench-cp%02d", i), "--size", e.o.size, "--image", "tiny")
		if err != nil {
			return err
		}
		r.clusterPlaced.add(t)
		if t, err = hosts[0].timedCLI("create", fmt.Sprintf("lvbench-ch%02d", i), "--size", e.o.size, "--image", "tiny", "--here"); err != nil {
			return err
		}
		r.clusterHere.add(t)
		if t, err = single.timedCLI("create", fmt.Sprintf("lvbench-cs%02d", i), "--size", e.o.size, "--image", "tiny"); err != nil {
			return err
		}
		r.clusterSingle.add(t)
	}
	// Every placed create must have stayed on the first host.
	out, err := hosts[0].cli("list", "-o", "json")
	if err != nil {
		return err
	}
	if n := strings.Count(out, `"name": "lvbench-cp`); n != runs {
		return fmt.Errorf("cluster: %d of %d placed creates landed on the first host", n, runs)
	}
	for _, d := range append(hosts, single) {
		d.stop()
	}
	return nil
}
