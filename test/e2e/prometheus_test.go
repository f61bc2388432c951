package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labvm/labvm/test/hostreq"
)

// TestPrometheusScrapesLabvmd: an admin points Debian's Prometheus at
// labvmd's metrics listener (metrics_listen in labvmd.yaml). After a
// create, Prometheus's own HTTP API answers for the instance count, the
// create's duration histogram and the new instance's CPU time from
// libvirt.
func TestPrometheusScrapesLabvmd(t *testing.T) {
	image := requireHost(t)
	promBin := hostreq.RequireTool(t, "prometheus", "prometheus")

	metricsAddr := freeLoopbackAddr(t)
	promAddr := freeLoopbackAddr(t)
	cfgDir := t.TempDir()
	labvmdYAML := filepath.Join(cfgDir, "labvmd.yaml")
	if err := os.WriteFile(labvmdYAML, []byte("metrics_listen: "+metricsAddr+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The later --config wins over the harness's --config /nonexistent.
	d := startDaemon(t, "--config", labvmdYAML)

	// honor_labels keeps labvm's own instance label (the instance name)
	// instead of renaming it exported_instance: docs/ARCHITECTURE.md.
	promYAML := filepath.Join(cfgDir, "prometheus.yml")
	promCfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: labvmd
    honor_labels: true
    static_configs:
      - targets: ['%s']
`, metricsAddr)
	if err := os.WriteFile(promYAML, []byte(promCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	prom := exec.Command(promBin, "--config.file="+promYAML, "--storage.tsdb.path="+filepath.Join(cfgDir, "tsdb"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	var promLog bytes.Buffer
	prom.Stdout, prom.Stderr = &promLog, &promLog
	prom.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	promDone := make(chan struct{})
	go func() { _ = prom.Wait(); close(promDone) }()
	t.Cleanup(func() {
		_ = prom.Process.Signal(syscall.SIGTERM)
		select {
		case <-promDone:
		case <-time.After(20 * time.Second):
			_ = prom.Process.Kill()
			<-promDone
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", promLog.String())
		}
	})

	api := "http://" + promAddr + "/api/v1/query"
	d.chapter(t, "Prometheus scrapes labvmd: the target is up", func(t *testing.T) {
		waitQuery(t, api, `up{job="labvmd"}`, func(v float64) bool { return v == 1 }, time.Minute)
	})

	name := "prom-" + randHex(3)
	d.chapter(t, "after a create, Prometheus has the instance count, the create's histogram and its CPU time", func(t *testing.T) {
		d.must("image", "import", "tiny", image, "--sha256", readSHA256(t, image))
		d.must("create", name, "--image", "tiny", "--size", "Standard_B1s")

		waitQuery(t, api, `sum(labvm_instances{state="Running"})`, func(v float64) bool { return v == 1 }, time.Minute)
		waitQuery(t, api, `sum(labvm_operation_duration_seconds_count{kind="create",outcome="succeeded"})`,
			func(v float64) bool { return v == 1 }, time.Minute)
		waitQuery(t, api, `histogram_quantile(0.5, sum by (le) (labvm_operation_duration_seconds_bucket{kind="create"}))`,
			func(v float64) bool { return v > 0 }, time.Minute)
		waitQuery(t, api, fmt.Sprintf(`libvirt_domain_info_cpu_time_seconds_total{instance=%q}`, name),
			func(v float64) bool { return v > 0 }, time.Minute)
	})

	d.chapter(t, "every query of docs/grafana-dashboard.json is PromQL that Prometheus evaluates", func(t *testing.T) {
		raw, err := os.ReadFile("../../docs/grafana-dashboard.json")
		if err != nil {
			t.Fatal(err)
		}
		var dash any
		if err := json.Unmarshal(raw, &dash); err != nil {
			t.Fatal(err)
		}
		// Grafana's variables, as Grafana would fill them in.
		fill := strings.NewReplacer("$__rate_interval", "1m", "$instance", ".*")
		exprs := collectExprs(dash)
		if len(exprs) < 10 {
			t.Fatalf("found %d queries in the dashboard", len(exprs))
		}
		for _, e := range exprs {
			q := fill.Replace(e)
			n, answer, err := promResultCount(api, q)
			if err != nil {
				t.Errorf("dashboard query %s: %v %s", q, err, answer)
				continue
			}
			if n == 0 {
				t.Logf("dashboard query %s: no data yet (valid PromQL)", q)
			}
		}
	})
}

// collectExprs finds every "expr" string in a decoded JSON document.
func collectExprs(v any) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if s, ok := c.(string); ok && k == "expr" {
				out = append(out, s)
				continue
			}
			out = append(out, collectExprs(c)...)
		}
	case []any:
		for _, c := range x {
			out = append(out, collectExprs(c)...)
		}
	}
	return out
}

// promResultCount runs an instant query and returns how many series it
// gave; an error means Prometheus refused the query.
func promResultCount(api, query string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"?query="+url.QueryEscape(query), nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return 0, string(raw), err
	}
	if body.Status != "success" {
		return 0, string(raw), fmt.Errorf("status %s: %s", body.Status, body.Error)
	}
	return len(body.Data.Result), "", nil
}

// freeLoopbackAddr returns a 127.0.0.1 address with a port free right
// now (the kernel's pick, so concurrent tests do not collide).
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitQuery asks Prometheus's HTTP API an instant query until its single
// sample satisfies ok, or fails after wait with the last answer.
func waitQuery(t *testing.T, api, query string, ok func(float64) bool, wait time.Duration) float64 {
	t.Helper()
	deadline := time.Now().Add(wait)
	last := ""
	for {
		v, answer, err := promQuery(api, query)
		if err == nil && ok(v) {
			return v
		}
		last = answer
		if err != nil {
			last = err.Error() + " " + answer
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus query %s: last answer %s", query, last)
		}
		time.Sleep(time.Second)
	}
}

// promQuery runs one instant query and returns its single sample.
func promQuery(api, query string) (float64, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"?query="+url.QueryEscape(query), nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	var raw bytes.Buffer
	if err := json.NewDecoder(io.TeeReader(resp.Body, &raw)).Decode(&body); err != nil {
		return 0, raw.String(), fmt.Errorf("decode: %w", err)
	}
	if body.Status != "success" {
		return 0, raw.String(), fmt.Errorf("status %s: %s", body.Status, body.Error)
	}
	if len(body.Data.Result) != 1 {
		return 0, raw.String(), fmt.Errorf("%d samples, want 1", len(body.Data.Result))
	}
	s, _ := body.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	return v, raw.String(), err
}
