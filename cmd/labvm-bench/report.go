package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"libvirt.org/go/libvirt"
)

type scalePoint struct {
	n                    int
	list, listJSON, show sample
}

// report holds every figure of one run and renders docs/BENCHMARKS.md.
type report struct {
	o       options
	machine [][2]string
	took    time.Duration
	notes   []string

	qemu                                    bool
	cpCreate, cpAccepted                    sample
	stageOrder                              []string
	stages                                  map[string]*sample
	floor, floorDisk, floorSeed, floorStart sample
	bare                                    sample
	cmdLabvm, cmdLabvmExit                  sample
	cmdVirtInstall, cmdVirtInstallExit      sample
	lcCreate, lcStop, lcStart, lcDelete     sample
	freshDisk, bootedDisk                   []int64

	copyMiB                    int
	copyVia                    string
	cpIn, cpOut, sshIn, sshOut sample
	copyRSS                    int64

	scale                              bool
	scaleN                             int
	scaleCreate                        sample
	scaleTotal                         time.Duration
	points                             []*scalePoint
	rssIdle, rssFull, rssAfterParallel int64
	memFull, memAfterParallel          memSplit
	dbSize                             int64
	freshDiskScale                     int64
	parallel                           sample
	parallelFailed                     []string

	cluster                       bool
	clusterN                      int
	clusterList, clusterLocalList sample
	clusterPlaced, clusterHere    sample
	clusterSingle                 sample

	ds *dsReport
}

func newReport(o options) *report { return &report{o: o, stages: map[string]*sample{}} }

func (r *report) stage(name string) *sample {
	s, ok := r.stages[name]
	if !ok {
		s = &sample{name: name}
		r.stages[name] = s
		r.stageOrder = append(r.stageOrder, name)
	}
	return s
}

func machineInfo(lv *libvirt.Connect) [][2]string {
	cpu := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				var kb int64
				_, _ = fmt.Sscan(f[1], &kb) // unparsable: 0 GiB shown
				mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	lib, _ := lv.GetLibVersion()
	hv, _ := lv.GetVersion()
	first := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			return "not installed"
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	osName := "?"
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				osName = strings.Trim(v, `"`)
			}
		}
	}
	ver := func(v uint32) string { return fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000) }
	return [][2]string{
		{"Date", time.Now().UTC().Format("2006-01-02 15:04 UTC")},
		{"CPU", cpu},
		{"Cores", fmt.Sprint(runtime.NumCPU())},
		{"Memory", mem},
		{"OS", osName},
		{"Kernel", strings.TrimSpace(string(kernel))},
		{"libvirt", ver(lib)},
		{"QEMU", ver(hv) + " (" + first("qemu-system-x86_64", "--version") + "), accelerator TCG"},
		{"virt-install", first("virt-install", "--version")},
		{"labvm", first("git", "describe", "--always", "--dirty")},
		{"Go", runtime.Version()},
		{"Load average at start", loadavg()},
	}
}

func row(s *sample, what string) string {
	if len(s.runs) == 0 {
		return fmt.Sprintf("| %s | 0 | – | – | – | – |\n", what)
	}
	return fmt.Sprintf("| %s | %d | %s | %s | %s | %s |\n", what, len(s.runs), ms(s.median()), ms(s.p95()), ms(s.min()), ms(s.max()))
}

func median64(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

type target struct {
	what, goal, got string
	pass            bool
	by              string
}

func (r *report) targets() []target {
	var out []target
	if r.qemu && len(r.floor.runs) > 0 && len(r.cpCreate.runs) > 0 {
		ratio := float64(r.cpCreate.median()) / float64(r.floor.median())
		out = append(out, target{"create control plane vs floor", "≤ 1.2× floor",
			fmt.Sprintf("%s vs %s = %.2f× (median of the %d paired runs' ratios: %.2f×; min vs min: %.2f×)",
				ms(r.cpCreate.median()), ms(r.floor.median()), ratio, len(r.cpCreate.runs), r.pairedRatio(),
				float64(r.cpCreate.min())/float64(r.floor.min())),
			ratio <= 1.2, margin(ratio, 1.2, "×")})
	}
	if r.qemu && len(r.cmdVirtInstall.runs) > 0 && len(r.cmdLabvm.runs) > 0 {
		ratio := float64(r.cmdVirtInstall.median()) / float64(r.cmdLabvm.median())
		out = append(out, target{"create vs virt-install (whole commands, to running)", "≥ 2.5× faster",
			fmt.Sprintf("%s vs %s = %.2f×", ms(r.cmdLabvm.median()), ms(r.cmdVirtInstall.median()), ratio),
			ratio >= 2.5, margin(2.5, ratio, "×")})
	}
	if r.scale && len(r.points) > 0 {
		p := r.points[len(r.points)-1]
		for _, c := range []struct {
			name string
			s    *sample
		}{{"list", &p.list}, {"show", &p.show}} {
			m := c.s.median()
			out = append(out, target{fmt.Sprintf("`labvm %s` at %d instances", c.name, p.n), "≤ 50 ms median", ms(m),
				m <= 50*time.Millisecond, margin(float64(m)/float64(time.Millisecond), 50, "ms")})
		}
		out = append(out,
			target{"daemon RSS idle", "≤ 50 MB", mb(r.rssIdle), r.rssIdle <= 50e6, margin(float64(r.rssIdle)/1e6, 50, "MB")},
			target{fmt.Sprintf("daemon RSS at %d instances", r.scaleN), "≤ 100 MB", mb(r.rssFull), r.rssFull <= 100e6, margin(float64(r.rssFull)/1e6, 100, "MB")})
		if n := len(r.scaleCreate.runs); n >= 200 {
			// A create's cost must not grow with the fleet: the median of
			// the last tenth against the first tenth.
			first, last := sample{runs: r.scaleCreate.runs[:n/10]}, sample{runs: r.scaleCreate.runs[n-n/10:]}
			ratio := float64(last.median()) / float64(first.median())
			out = append(out, target{fmt.Sprintf("create cost at %d instances vs at the start", n), "≤ 1.5× (flat)",
				fmt.Sprintf("last %d: %s, first %d: %s = %.2f×", n/10, ms(last.median()), n/10, ms(first.median()), ratio),
				ratio <= 1.5, margin(ratio, 1.5, "×")})
		}
		single := r.scaleCreate.median()
		worst := r.parallel.max()
		ok := len(r.parallelFailed) == 0 && len(r.parallel.runs) == r.o.parallel && worst <= 10*single
		out = append(out, target{fmt.Sprintf("%d parallel creates", r.o.parallel), "all succeed, none > 10× single median",
			fmt.Sprintf("%d/%d succeeded, slowest %s = %.1f× single median %s", len(r.parallel.runs), r.o.parallel, ms(worst), float64(worst)/float64(single), ms(single)),
			ok, margin(float64(worst)/float64(single), 10, "× of the single median")})
	}
	fresh := r.freshDiskScale
	if fresh == 0 {
		fresh = median64(r.freshDisk)
	}
	if fresh > 0 {
		out = append(out, target{"host disk of a fresh 120 GiB instance", "≤ 1 MiB", kib(fresh), fresh <= 1<<20,
			margin(float64(fresh)/1024, 1024, "KiB")})
	}
	return out
}

// margin says how far got is under (PASS) or over (MISS) limit.
// pairedRatio is the median over runs of control-plane create / the floor
// run right after it: adjacent runs share the host's load of the moment,
// so this is less noisy than median against median on a shared host.
func (r *report) pairedRatio() float64 {
	var ratios []float64
	for i := range min(len(r.cpCreate.runs), len(r.floor.runs)) {
		ratios = append(ratios, float64(r.cpCreate.runs[i])/float64(r.floor.runs[i]))
	}
	if len(ratios) == 0 {
		return 0
	}
	slices.Sort(ratios)
	if n := len(ratios); n%2 == 0 {
		return (ratios[n/2-1] + ratios[n/2]) / 2
	}
	return ratios[len(ratios)/2]
}

func margin(got, limit float64, unit string) string {
	sep := " "
	if strings.HasPrefix(unit, "×") {
		sep = ""
	}
	if got <= limit {
		return fmt.Sprintf("%.2f%s%s to spare", limit-got, sep, unit)
	}
	return fmt.Sprintf("%.2f%s%s over", got-limit, sep, unit)
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# labvm benchmarks\n\n")
	w("Written by `cmd/labvm-bench` (do not edit by hand). Reproduce with `sudo make bench` (as root)\n")
	w("or, after `make build`: `sudo go run ./cmd/labvm-bench -image /tmp/img/tiny.qcow2` (flags: `-h`).\n")
	w("The whole run took %s; load average at the end: %s.\n\n", r.took.Round(time.Second), loadavg())
	w("## Machine\n\n| | |\n|---|---|\n")
	for _, m := range r.machine {
		w("| %s | %s |\n", m[0], m[1])
	}

	w("\n## Targets\n\n| target | goal | measured | result |\n|---|---|---|---|\n")
	for _, t := range r.targets() {
		res := "**PASS**"
		if !t.pass {
			res = "**MISS**"
		}
		w("| %s | %s | %s | %s (%s) |\n", t.what, t.goal, t.got, res, t.by)
	}

	head := "| figure | runs | median | p95 | min | max |\n|---|---|---|---|---|---|\n"
	if r.qemu {
		w("\n## Create on QEMU (TCG), image already imported\n\n")
		w("1. **Control plane**: from the API create call (Go client) to the domain running, i.e. the\n")
		w("   operation reaching \"Waiting for the guest\" (libvirt's CreateXML has returned). The guest's\n")
		w("   own boot is excluded: after each timed create the domain is destroyed so it never competes\n")
		w("   with the next measurement, and the instance deleted.\n")
		w("4. **Floor**: the same work with nothing of labvm around it, in-process: `storage.CreateOverlay`\n")
		w("   (120 GiB), `storage.WriteSeed`, `vm.DomainXML`, and libvirt `virDomainCreateXML` of that XML.\n")
		w("   Floor runs are interleaved with the control-plane runs.\n\n")
		w("%s", head)
		w("%s", row(&r.cpCreate, "labvm create → domain running (API)"))
		w("%s", row(&r.cpAccepted, "… of which: POST answered (202, record written)"))
		w("%s", row(&r.floor, "floor: overlay + seed + CreateXML"))
		w("%s", row(&r.floorDisk, "… floor: qcow2 overlay"))
		w("%s", row(&r.floorSeed, "… floor: seed ISO"))
		w("%s", row(&r.floorStart, "… floor: CreateXML (QEMU start)"))
		w("%s", row(&r.bare, "bare q35 domain, no devices: CreateXML"))
		if len(r.floor.runs) > 0 && len(r.cpCreate.runs) > 0 {
			over := r.cpCreate.median() - r.floor.median()
			w("\nlabvm's create is **%s (%.2f×)** above the floor (median against median).\n",
				ms(over), float64(r.cpCreate.median())/float64(r.floor.median()))
		}
		w("\nWhere a create's time goes, from the operation's own stage timestamps (server side):\n\n")
		w("%s", head)
		for _, n := range r.stageOrder {
			w("%s", row(r.stages[n], "stage: "+n))
		}

		w("\n## labvm create vs virt-install (whole commands)\n\n")
		w("Both timed from command start until `virDomainListAllDomains` (polled every 5 ms, the same way\n")
		w("for both) shows the domain running. labvm: `labvm create NAME --size %s --image tiny --no-wait`.\n", r.o.size)
		w("virt-install: `qemu-img create -f qcow2 -F qcow2 -b BASE OVERLAY 120G`, the same three cloud-init\n")
		w("documents written to files, then `virt-install --import --virt-type qemu --machine q35 --memory\n")
		w("1024 --vcpus 1 --disk OVERLAY --cloud-init user-data=…,meta-data=…,network-config=… --network\n")
		w("bridge=… --graphics none --noautoconsole --osinfo detect=on,require=off` (virt-install builds\n")
		w("the seed ISO itself), same base image, same bridge. Runs alternate labvm / virt-install.\n\n")
		w("%s", head)
		w("%s", row(&r.cmdLabvm, "labvm create --no-wait → domain running"))
		w("%s", row(&r.cmdLabvmExit, "… labvm command exited"))
		w("%s", row(&r.cmdVirtInstall, "qemu-img + virt-install → domain running"))
		w("%s", row(&r.cmdVirtInstallExit, "… virt-install command exited"))
		if len(r.cmdVirtInstall.runs) > 0 && len(r.cmdLabvm.runs) > 0 {
			w("\nRatio (virt-install median / labvm median): **%.2f×**.\n", float64(r.cmdVirtInstall.median())/float64(r.cmdLabvm.median()))
			if b := r.bare.median(); b > 0 {
				w("\nBoth include QEMU's own start. A create can be no faster than starting a bare domain with\n")
				w("no devices (%s median, above), so the best ratio any tool could reach against this\n", ms(b))
				w("virt-install is %.2f× (virt-install median / bare-domain median).\n", float64(r.cmdVirtInstall.median())/float64(b))
			}
		}

		w("\n## Lifecycle with a guest that boots (test image, whole `labvm` commands)\n\n")
		w("%s", head)
		w("%s", row(&r.lcCreate, "create → Running (guest agent answers)"))
		w("%s", row(&r.lcStop, "stop → Stopped (ACPI, deallocated)"))
		w("%s", row(&r.lcStart, "start → Running"))
		w("%s", row(&r.lcDelete, "delete"))
	}

	r.copyMarkdown(w)

	if r.scale {
		w("\n## Scale: libvirt's test driver standing in for QEMU\n\n")
		w("`labvmd --libvirt-uri %s --ready-probe none`: domains are simulated by libvirt's test driver,\n", r.o.scaleURI)
		w("the store, disks, seeds and bridge are real.\n")
		if strings.Contains(r.o.scaleURI, "+") {
			w("The test driver runs in libvirtd, so the simulated domains live outside labvmd as real ones do;\n")
			w("with `test:///default` (client-side) they live in labvmd's process, where 10,000 take ~105 MB of its RSS.\n")
			w("libvirtd frees them when labvmd disconnects, though its RSS may stay ~100 MB higher (malloc keeps the pages).\n")
		} else {
			w("The test driver runs inside labvmd's process (client-side): its simulated domains count in labvmd's RSS.\n")
		}
		w("`--ready-probe none` makes an instance Running once its domain runs, since there is no guest.\n")
		w("Creates go through the API one at a time, each waited for.\n\n")
		w("%s", head)
		w("%s", row(&r.scaleCreate, fmt.Sprintf("create → Running (each of %d)", len(r.scaleCreate.runs))))
		for _, p := range r.points {
			w("%s", row(&p.list, fmt.Sprintf("`labvm list` at %d instances", p.n)))
			w("%s", row(&p.listJSON, fmt.Sprintf("`labvm list -o json` at %d instances", p.n)))
			w("%s", row(&p.show, fmt.Sprintf("`labvm show` at %d instances", p.n)))
		}
		w("%s", row(&r.parallel, fmt.Sprintf("%d creates in parallel, each", r.o.parallel)))
		w("\n| figure | value |\n|---|---|\n")
		w("| total time of %d creates | %s |\n", len(r.scaleCreate.runs), r.scaleTotal.Round(time.Millisecond))
		w("| daemon RSS idle (image imported, no instances) | %s |\n", mb(r.rssIdle))
		w("| daemon RSS at %d instances | %s |\n", r.scaleN, mb(r.rssFull))
		memRows(w, r.memFull)
		w("| daemon RSS after the parallel creates | %s |\n", mb(r.rssAfterParallel))
		memRows(w, r.memAfterParallel)
		w("| bbolt file at %d instances | %s |\n", r.scaleN, mib(r.dbSize))
		if len(r.parallelFailed) > 0 {
			w("| parallel creates failed | %d: %s |\n", len(r.parallelFailed), strings.ReplaceAll(r.parallelFailed[0], "|", "/"))
		}
		if single, n := r.scaleCreate.median(), len(r.parallel.runs); single > 0 && n > 0 {
			// The work of n creates shared by the host's cores is a floor
			// under the slowest of them, whatever the daemon does.
			cores := runtime.NumCPU()
			share := time.Duration(int64(single) * int64(n) / int64(cores))
			w("\n%d creates started together share %d cores: if each needs what one alone takes (%s),\n", n, cores, ms(single))
			w("the last can finish no sooner than about %s (%d × %s ÷ %d cores) = %.1f× the single median,\n", ms(share), n, ms(single), cores, float64(share)/float64(single))
			w("before any queueing. The slowest measured %s (%.1f×).\n", ms(r.parallel.max()), float64(r.parallel.max())/float64(single))
		}
	}

	if r.cluster {
		w("\n## Cluster: three hosts on the test driver, one etcd member (mutual TLS)\n\n")
		w("Three labvmd on `test:///default` in one cluster, %d instances in all (the first host holds\n", r.clusterN)
		w("%d fewer than the others, so every placed create lands on it: the bench has no ssh). Whole\n", 2*r.o.cmdRuns)
		w("`labvm` commands against the first host; creates alternate placed / `--here` / a host of its own.\n\n")
		w("%s", head)
		w("%s", row(&r.clusterList, fmt.Sprintf("`labvm list --cluster` over %d instances", r.clusterN)))
		w("%s", row(&r.clusterLocalList, "`labvm list` of the first host's own"))
		w("%s", row(&r.clusterPlaced, "`labvm create` placed (placement read, name reserved in etcd)"))
		w("%s", row(&r.clusterHere, "`labvm create --here` (name reserved in etcd)"))
		w("%s", row(&r.clusterSingle, "`labvm create` on a host in no cluster"))
		if s := r.clusterSingle.median(); s > 0 && len(r.clusterPlaced.runs) > 0 {
			w("\nA placed create takes **%.2f×** a single-host create (median against median); pinned with\n", float64(r.clusterPlaced.median())/float64(s))
			w("`--here`, %.2f×.\n", float64(r.clusterHere.median())/float64(s))
		}
	}

	w("\n## Disk\n\n| figure | host bytes (disk.qcow2 + seed.iso, stat blocks) |\n|---|---|\n")
	if r.freshDiskScale > 0 {
		w("| fresh instance, 120 GiB disk, never booted (test driver) | %s |\n", kib(r.freshDiskScale))
	}
	if len(r.freshDisk) > 0 {
		w("| fresh instance at domain running (QEMU), median | %s |\n", kib(median64(r.freshDisk)))
	}
	if len(r.bootedDisk) > 0 {
		w("| after the guest booted to Running, median | %s |\n", kib(median64(r.bootedDisk)))
	}
	for _, n := range r.notes {
		w("\nNote: %s\n", n)
	}
	return b.String()
}

// memRows splits a RSS figure: anonymous and file-backed pages, and the
// Go heap in it.
func memRows(w func(format string, args ...any), m memSplit) {
	if m.rss == 0 {
		return
	}
	w("| … of which anonymous (Go heap and stacks, C allocations) | %s |\n", mb(m.anon))
	w("| … of which file-backed (the binary, its libraries, bbolt's mmap of the database) | %s |\n", mb(m.rss-m.anon))
	if m.heapSys > 0 {
		w("| … Go heap in use / held from the OS | %s / %s |\n", mb(m.heapInuse), mb(m.heapSys-m.heapReleased))
	}
}

// loadavg is /proc/loadavg's 1, 5 and 15 minute figures: other work on
// the host (other VMs, builds) shows up in every figure here.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
