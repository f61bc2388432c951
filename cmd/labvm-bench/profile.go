package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon"
	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/network"
)

// profile runs labvmd in this process on the test driver (-scale-uri) and writes CPU
// profiles of creating o.scale instances (cpu-create.pprof) and of list
// and show at that count (cpu-read.pprof), of o.parallel creates at once
// (cpu-parallel.pprof, block.pprof), and a heap profile. Read them
// with `go tool pprof -top`.
func profile(o options) error {
	if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("/var/tmp", "lvbench-prof-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(work) }()
	_ = os.Chmod(work, 0o755)
	subnet, err := freeSubnet(16)
	if err != nil {
		return err
	}
	cfg := daemon.DefaultConfig()
	cfg.SocketPath = filepath.Join(work, "labvm.sock")
	cfg.SocketGroup = ""
	cfg.DataDir = filepath.Join(work, "data")
	cfg.LibvirtURI = o.scaleURI
	cfg.ReadyProbe = daemon.ReadyProbeNone
	cfg.PhoneHomePort = 0
	cfg.VNet.Bridge = "lvbp" + randHex(3)
	cfg.VNet.Subnet = subnet
	// Its own firewall table, removed at the end: a table left behind
	// keeps dropping its subnet's frames on every bridge of the host.
	cfg.FirewallTable = "lvbp_" + randHex(3)
	cfg.BridgePrefix = "lp" + randHex(2)
	defer func() {
		_ = network.RemoveFirewall(context.Background(), cfg.FirewallTable)
		_ = network.FirewallRegistry{Dir: network.DefaultFirewallOwners}.Forget(cfg.FirewallTable)
		_ = exec.Command("ip", "link", "del", cfg.VNet.Bridge).Run()
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := daemon.New(ctx, cfg, daemon.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		return err
	}
	c := client.New(cfg.SocketPath)
	op, err := c.ImportImageFile(ctx, api.ImportImageRequest{Name: "tiny"}, o.image)
	if err != nil {
		return err
	}
	if _, err := c.Wait(ctx, op.ID, nil); err != nil {
		return err
	}

	stopProfile, err := startCPU(filepath.Join(o.profileDir, "cpu-create.pprof"))
	if err != nil {
		return err
	}
	t0 := time.Now()
	for i := 0; i < o.scale; i++ {
		op, err := c.CreateInstance(ctx, api.CreateInstanceRequest{Name: fmt.Sprintf("lvbench-s%04d", i), Size: o.size, Image: "tiny"})
		if err != nil {
			return err
		}
		if _, err := c.Wait(ctx, op.ID, nil); err != nil {
			return err
		}
	}
	stopProfile()
	fmt.Printf("%d creates: %s\n", o.scale, time.Since(t0).Round(time.Millisecond))

	if stopProfile, err = startCPU(filepath.Join(o.profileDir, "cpu-read.pprof")); err != nil {
		return err
	}
	t0 = time.Now()
	for i := 0; i < 50; i++ {
		if _, err := c.Instances(ctx); err != nil {
			return err
		}
		if _, err := c.Instance(ctx, fmt.Sprintf("lvbench-s%04d", o.scale/2)); err != nil {
			return err
		}
	}
	stopProfile()
	fmt.Printf("50 × (list + show) at %d: %s\n", o.scale, time.Since(t0).Round(time.Millisecond))

	// Parallel creates: where they wait for each other.
	runtime.SetBlockProfileRate(int(10 * time.Microsecond))
	if stopProfile, err = startCPU(filepath.Join(o.profileDir, "cpu-parallel.pprof")); err != nil {
		return err
	}
	t0 = time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, o.parallel)
	for i := range o.parallel {
		wg.Go(func() {
			op, err := c.CreateInstance(ctx, api.CreateInstanceRequest{Name: fmt.Sprintf("lvbench-p%02d", i), Size: o.size, Image: "tiny"})
			if err == nil {
				_, err = c.Wait(ctx, op.ID, nil)
			}
			errs <- err
		})
	}
	wg.Wait()
	stopProfile()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	fmt.Printf("%d parallel creates: %s\n", o.parallel, time.Since(t0).Round(time.Millisecond))
	if err := writeProfile("block", filepath.Join(o.profileDir, "block.pprof")); err != nil {
		return err
	}
	runtime.SetBlockProfileRate(0)

	runtime.GC()
	f, err := os.Create(filepath.Join(o.profileDir, "heap.pprof"))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		return err
	}
	if err := f.Close(); err != nil { // a written file: its Close counts
		return err
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("labvmd: %w", err)
	}
	fmt.Printf("profiles in %s\n", o.profileDir)
	return nil
}

func startCPU(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "cpu profile %s: %v\n", path, err)
		}
	}, nil
}

func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		return err
	}
	return f.Close() // a written file: its Close counts
}
