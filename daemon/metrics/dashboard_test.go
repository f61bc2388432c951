package metrics_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/vm"
)

// dashboard is the part of a Grafana dashboard this test reads.
type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos *struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// metricName matches labvm's and the libvirt exporters' series names in
// PromQL.
var metricName = regexp.MustCompile(`\b(?:labvm|libvirt)_[a-z0-9_]+`)

// TestGrafanaDashboardQueriesExist keeps docs/grafana-dashboard.json
// honest: it is a well-formed dashboard, and every series its panels and
// variables query is in what labvmd's /metrics serves (a histogram by its
// _bucket, _sum and _count series).
func TestGrafanaDashboardQueriesExist(t *testing.T) {
	raw, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion == 0 || len(d.Panels) == 0 {
		t.Fatalf("not a Grafana dashboard: title %q uid %q schemaVersion %d, %d panels", d.Title, d.UID, d.SchemaVersion, len(d.Panels))
	}

	queried := map[string][]string{} // series → where
	ids := map[int]string{}
	for _, p := range d.Panels {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: bad gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || len(p.Targets) == 0 {
			t.Errorf("panel %q: want a prometheus data source and at least one target", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricName.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q target %s queries no labvm series: %q", p.Title, tg.RefID, tg.Expr)
			}
			for _, n := range names {
				queried[n] = append(queried[n], "panel "+p.Title)
			}
		}
	}
	for _, v := range d.Templating.List {
		for _, n := range metricName.FindAllString(v.Definition, -1) {
			queried[n] = append(queried[n], "variable "+v.Name)
		}
	}

	served := servedSeries(t)
	var missing []string
	for n, where := range queried {
		if !served[n] {
			missing = append(missing, fmt.Sprintf("%s (%s)", n, strings.Join(where, ", ")))
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("the dashboard queries %s, which labvmd's /metrics does not serve", m)
	}
}

// servedSeries scrapes /metrics of a daemon with a running instance,
// libvirt counters, a quota and finished operations, and returns every
// series name in it.
func servedSeries(t *testing.T) map[string]bool {
	t.Helper()
	hv := daemontest.NewFakeHypervisor()
	td := newDaemonWith(t, hv)
	inst := mustCreate(t, td, "dash")
	hv.SetStats(inst.Domain, vm.DomainStats{
		CPUTime: time.Second, MemoryBytes: 1 << 30, MaxMemoryBytes: 1 << 30, RSSBytes: 1 << 28,
		Disks: []vm.DiskStats{{Device: "vda", ReadBytes: 1, WriteBytes: 1, ReadRequests: 1, WriteRequests: 1}},
		NICs:  []vm.NICStats{{Device: "lvp0", RxBytes: 1, TxBytes: 1, RxPackets: 1, TxPackets: 1}},
	})
	settle(t, td)
	rec := httptest.NewRecorder()
	td.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body.String())
	}
	served := map[string]bool{}
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		served[name] = true
	}
	return served
}

// newDaemonWith is newDaemon over a given hypervisor.
func newDaemonWith(t *testing.T, hv *daemontest.FakeHypervisor) *daemontest.Daemon {
	t.Helper()
	return daemontest.NewWith(t, hv, func(c *daemon.Config) {
		c.Quota = daemon.QuotaConfig{Total: 8, Families: map[string]int{"standardBSFamily": 4}}
	}, nil)
}
