package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

// scaleFigures run a daemon on libvirt's test driver: domains are
// simulated, everything else (store, disks, seeds, bridge) is real. The
// driver runs in libvirtd (test+unix:///default) unless -scale-uri says
// otherwise: in labvmd's own process (test:///default) its simulated
// domains would count in labvmd's RSS, where real ones never do.
// `--ready-probe none` makes an instance Running once its domain runs,
// since the test driver has no guest to answer.
func (e *env) scaleFigures() error {
	d, err := e.startDaemon("scale", 16, "--libvirt-uri", e.o.scaleURI, "--ready-probe", "none")
	if err != nil {
		return err
	}
	if _, err := d.importImage(e.image); err != nil {
		return err
	}
	r := e.report
	r.scale = true
	r.scaleN = e.o.scale
	time.Sleep(time.Second)
	r.rssIdle = d.rss()

	checkpoints := []int{10, 100, 1000}
	if !slices.Contains(checkpoints, e.o.scale) {
		checkpoints = append(checkpoints, e.o.scale)
	}
	e.logf("scale: %d creates on %s", e.o.scale, e.o.scaleURI)
	ctx := context.Background()
	start := time.Now()
	var creating time.Duration
	for i := 0; i < e.o.scale; i++ {
		name := fmt.Sprintf("lvbench-s%04d", i)
		t0 := time.Now()
		if err := createAndWait(ctx, d, name, e.o.size); err != nil {
			return err
		}
		took := time.Since(t0)
		creating += took
		r.scaleCreate.add(took)
		if i == 0 {
			inst, err := d.c.Instance(ctx, name)
			if err != nil {
				return err
			}
			r.freshDiskScale = diskBytes(filepath.Join(d.dataDir, "instances", inst.ID))
		}
		if n := i + 1; slices.Contains(checkpoints, n) {
			e.logf("scale: %d instances (%s); timing list and show", n, time.Since(start).Round(time.Millisecond))
			cp := &scalePoint{n: n}
			show := fmt.Sprintf("lvbench-s%04d", n/2)
			for j := 0; j < e.o.cmdRuns; j++ {
				t, err := d.timedCLI("list")
				if err != nil {
					return err
				}
				cp.list.add(t)
				if t, err = d.timedCLI("list", "-o", "json"); err != nil {
					return err
				}
				cp.listJSON.add(t)
				if t, err = d.timedCLI("show", show); err != nil {
					return err
				}
				cp.show.add(t)
			}
			r.points = append(r.points, cp)
		}
	}
	r.scaleTotal = creating
	r.rssFull = d.rss()
	r.memFull = d.memory()
	if fi, err := os.Stat(filepath.Join(d.dataDir, "labvm.db")); err == nil {
		r.dbSize = fi.Size()
	}

	e.logf("scale: %d creates in parallel", e.o.parallel)
	var wg sync.WaitGroup
	errs := make([]error, e.o.parallel)
	took := make([]time.Duration, e.o.parallel)
	for i := range e.o.parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			errs[i] = createAndWait(ctx, d, fmt.Sprintf("lvbench-p%02d", i), e.o.size)
			took[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil {
			r.parallelFailed = append(r.parallelFailed, errs[i].Error())
			continue
		}
		r.parallel.add(took[i])
	}
	r.rssAfterParallel = d.rss()
	r.memAfterParallel = d.memory()
	d.stop()
	return nil
}

func createAndWait(ctx context.Context, d *daemonProc, name, size string) error {
	op, err := d.c.CreateInstance(ctx, api.CreateInstanceRequest{Name: name, Size: size, Image: "tiny"})
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	if _, err := d.c.Wait(ctx, op.ID, nil); err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	return nil
}

// memSplit is where a process's resident memory is: anonymous (heaps,
// stacks) or file-backed (the binary, libraries, bbolt's mmap of the
// database), and the Go heap as labvmd's /metrics reports it.
type memSplit struct {
	rss, anon                        int64
	heapInuse, heapSys, heapReleased int64
}

// memory reads the daemon's smaps_rollup and its Go heap figures.
func (d *daemonProc) memory() memSplit {
	var m memSplit
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", d.cmd.Process.Pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			var kb int64
			_, _ = fmt.Sscan(f[1], &kb) // unparsable: 0, left out of the report
			switch f[0] {
			case "Rss:":
				m.rss = kb << 10
			case "Anonymous:":
				m.anon = kb << 10
			}
		}
	}
	hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
	}}}
	resp, err := hc.Get("http://labvmd/metrics")
	if err != nil {
		return m
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(body), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(value, &v); err != nil {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			m.heapInuse = int64(v)
		case "go_memstats_heap_sys_bytes":
			m.heapSys = int64(v)
		case "go_memstats_heap_released_bytes":
			m.heapReleased = int64(v)
		}
	}
	return m
}
