package lifecycle

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/vm"
)

// noAgent is a hypervisor whose guests never answer, like test:///default.
type noAgent struct {
	Hypervisor
	domains map[string]bool
}

func (n noAgent) DomainState(ctx context.Context, name string) (vm.DomainStatus, error) {
	if n.domains[name] {
		return vm.DomainRunning, nil
	}
	return vm.DomainAbsent, nil
}

func (noAgent) AgentPing(ctx context.Context, name string) error { return vm.ErrAgentUnavailable }

// TestReadyProbeNone: with --ready-probe none a running domain is ready
// at once, without a guest agent; a domain that is not running is not.
func TestReadyProbeNone(t *testing.T) {
	cfg := Config{ReadyProbe: ReadyProbeNone, ReadyTimeout: time.Minute}
	d := New(cfg, Deps{Hypervisor: noAgent{domains: map[string]bool{"labvm-a-12345678": true}}})
	start := time.Now()
	if _, err := d.waitReady(context.Background(), &watch{}, vm.Instance{ID: "1234567890abcdef", Domain: "labvm-a-12345678"}, nil); err != nil {
		t.Fatalf("running domain: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("ready took %s, want at once", took)
	}
	if _, err := d.waitReady(context.Background(), &watch{}, vm.Instance{ID: "2234567890abcdef", Domain: "labvm-b-22345678"}, nil); err == nil {
		t.Fatal("absent domain reported ready")
	}
}

// fakeGuest is a running guest whose agent answers from a script: the
// agent comes up after agentAfter checks, result.json appears after
// resultAfter reads of it.
type fakeGuest struct {
	Hypervisor
	noAgent     bool
	execRefused bool
	cloudInit   bool
	status      string // status.json; "" is absent
	result      string // result.json once it appears
	resultAfter int
	resultReads int
	probes      int
}

func (g *fakeGuest) DomainState(ctx context.Context, name string) (vm.DomainStatus, error) {
	return vm.DomainRunning, nil
}

func (g *fakeGuest) AgentPing(ctx context.Context, name string) error {
	if g.noAgent {
		return vm.ErrAgentUnavailable
	}
	return nil
}

func (g *fakeGuest) Exec(ctx context.Context, name string, req vm.ExecRequest) (vm.ExecResult, error) {
	if g.execRefused {
		return vm.ExecResult{}, errors.New("guest-exec: Command guest-exec has been disabled")
	}
	switch script := req.Args[1]; {
	case script == hasCloudInitScript:
		g.probes++
		if g.cloudInit {
			return vm.ExecResult{Stdout: []byte("yes\n")}, nil
		}
		return vm.ExecResult{Stdout: []byte("no\n")}, nil
	case script == readGuestFileScript && req.Args[3] == cloudInitResultPath:
		g.resultReads++
		if g.resultReads <= g.resultAfter {
			return vm.ExecResult{ExitCode: 3}, nil
		}
		return vm.ExecResult{Stdout: []byte(g.result)}, nil
	case script == readGuestFileScript && req.Args[3] == cloudInitStatusPath:
		if g.status == "" {
			return vm.ExecResult{ExitCode: 3}, nil
		}
		return vm.ExecResult{Stdout: []byte(g.status)}, nil
	}
	return vm.ExecResult{ExitCode: 127}, nil
}

// watch records what a wait reported.
type watch struct {
	steps     []string
	details   []string
	cloudInit bool
}

func (w *watch) Stage(step ops.Step, detail string) {
	w.steps = append(w.steps, step.ID)
	w.details = append(w.details, detail)
}
func (w *watch) Progress(detail string) { w.details = append(w.details, detail) }
func (w *watch) CloudInit()             { w.cloudInit = true }

func readyEngine(g *fakeGuest, timeout time.Duration) *Engine {
	return New(Config{ReadyProbe: ReadyProbeAgent, ReadyTimeout: timeout},
		Deps{Hypervisor: g, Log: slog.New(slog.DiscardHandler)})
}

var testInst = vm.Instance{ID: "1234567890abcdef", Name: "alice-dev", Domain: "labvm-alice-12345678"}

// TestWaitReady: the readiness decision. cloud-init's result of this boot
// is the signal where the guest runs cloud-init; the agent's first answer
// only where it does not; phone-home only while the agent is unavailable.
func TestWaitReady(t *testing.T) {
	closed := make(chan struct{})
	close(closed)
	const modulesFinal = `{"v1": {"stage": "modules-final", "init": {"errors": [], "start": 1.0, "finished": 2.0}}}`
	tests := []struct {
		name        string
		guest       fakeGuest
		phoned      <-chan struct{}
		want        guestReady
		wantErr     string
		wantSteps   []string
		wantDetail  string // among the details reported
		wantResults int    // reads of result.json, at least
	}{
		{name: "no cloud-init: the agent's first answer", guest: fakeGuest{}, want: guestReady{}},
		{name: "cloud-init: ready once result.json exists",
			guest:     fakeGuest{cloudInit: true, status: modulesFinal, resultAfter: 2, result: `{"v1": {"datasource": "DataSourceNoCloud", "errors": []}}`},
			want:      guestReady{cloudInit: true},
			wantSteps: []string{"cloud-init"}, wantDetail: "cloud-init: modules-final", wantResults: 3},
		{name: "cloud-init errors come back",
			guest:     fakeGuest{cloudInit: true, result: `{"v1": {"errors": ["('scripts_user', RuntimeError('Runparts: 1 failures (runcmd) in 1 attempted commands'))"]}}`},
			want:      guestReady{cloudInit: true, errors: []string{"('scripts_user', RuntimeError('Runparts: 1 failures (runcmd) in 1 attempted commands'))"}},
			wantSteps: []string{"cloud-init"}, wantDetail: "cloud-init: finished with errors"},
		{name: "a broken result.json is a failed boot",
			guest: fakeGuest{cloudInit: true, result: `{"v1": `},
			want:  guestReady{cloudInit: true, errors: []string{"/run/cloud-init/result.json is not valid JSON: unexpected end of JSON input"}}, wantSteps: []string{"cloud-init"}},
		{name: "phone-home while cloud-init still runs does not count",
			guest:  fakeGuest{cloudInit: true, resultAfter: 2, result: `{"v1": {"errors": []}}`},
			phoned: closed, want: guestReady{cloudInit: true}, wantSteps: []string{"cloud-init"}, wantResults: 3},
		{name: "phone-home counts without an agent", guest: fakeGuest{noAgent: true}, phoned: closed, want: guestReady{phoneHome: true}},
		{name: "an agent that cannot exec: its answer counts", guest: fakeGuest{execRefused: true}, want: guestReady{}},
		{name: "no agent, no phone-home: timeout", guest: fakeGuest{noAgent: true}, wantErr: "neither the QEMU guest agent answered nor cloud-init phoned home"},
		{name: "cloud-init never finishes: timeout says where it was",
			guest: fakeGuest{cloudInit: true, status: modulesFinal, resultAfter: 1 << 30}, wantSteps: []string{"cloud-init"},
			wantErr: "cloud-init did not finish within 2s (cloud-init: modules-final)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.guest
			w := &watch{}
			got, err := readyEngine(&g, 2*time.Second).waitReady(t.Context(), w, testInst, tt.phoned)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatalf("waitReady: %v", err)
			}
			if got.cloudInit != tt.want.cloudInit || got.phoneHome != tt.want.phoneHome || strings.Join(got.errors, "\n") != strings.Join(tt.want.errors, "\n") {
				t.Errorf("ready = %+v, want %+v", got, tt.want)
			}
			if strings.Join(w.steps, ",") != strings.Join(tt.wantSteps, ",") || w.cloudInit != (len(tt.wantSteps) > 0) {
				t.Errorf("steps %v (cloud-init told: %v), want %v", w.steps, w.cloudInit, tt.wantSteps)
			}
			if tt.wantDetail != "" && !strings.Contains(strings.Join(w.details, "\n"), tt.wantDetail) {
				t.Errorf("details %q lack %q", w.details, tt.wantDetail)
			}
			if g.resultReads < tt.wantResults {
				t.Errorf("ready after %d reads of result.json, want at least %d", g.resultReads, tt.wantResults)
			}
			if g.probes > 1 {
				t.Errorf("cloud-init probed %d times in one boot", g.probes)
			}
		})
	}
}

func TestParseCloudInitResult(t *testing.T) {
	long := strings.Repeat("x", 1000)
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr string
	}{
		{name: "done", in: `{"v1": {"datasource": "DataSourceNoCloud [seed=/dev/sr0]", "errors": []}}`},
		{name: "null errors", in: `{"v1": {"errors": null}}`},
		{name: "errors", in: `{"v1": {"errors": ["('scripts_user', RuntimeError('Runparts: 1 failures (runcmd) in 1 attempted commands'))"]}}`,
			want: []string{"('scripts_user', RuntimeError('Runparts: 1 failures (runcmd) in 1 attempted commands'))"}},
		{name: "control characters are escaped", in: `{"v1": {"errors": ["bad\nCreated: forged\u001b[2J\u202eevil"]}}`,
			want: []string{`bad\x0aCreated: forged\x1b[2J\u202eevil`}},
		{name: "long errors are clipped", in: `{"v1": {"errors": ["` + long + `"]}}`, want: []string{long[:maxProvisionErrorLen] + "…"}},
		{name: "many errors are bounded", in: `{"v1": {"errors": ["a","b","c","d","e","f","g"]}}`, want: []string{"a", "b", "c", "d", "e", "… and 2 more"}},
		{name: "non-string errors keep their JSON", in: `{"v1": {"errors": [{"module": "x"}, 3]}}`, want: []string{`{"module": "x"}`, "3"}},
		{name: "invalid JSON", in: `{"v1": {"errors": [`, wantErr: "not valid JSON"},
		{name: "not cloud-init's", in: `["errors"]`, wantErr: "not valid JSON"},
		{name: "no v1", in: `{"v2": {}}`, wantErr: `no "v1" object`},
		{name: "huge", in: `{"v1": {"errors": ["` + strings.Repeat("y", maxCloudInitJSON) + `"]}}`, wantErr: "larger than 64 KiB"},
		{name: "invalid UTF-8", in: "{\"v1\": {\"errors\": [\"\xff\xfe\"]}}", want: []string{"\ufffd\ufffd"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCloudInitResult([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") || len(got) != len(tt.want) {
				t.Fatalf("errors = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseCloudInitStatus(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"running stage", `{"v1": {"stage": "modules-final", "datasource": null}}`, "cloud-init: modules-final"},
		{"between stages", `{"v1": {"stage": null, "init-local": {"finished": 1.5}, "init": {"finished": 3.0}, "modules-config": {"finished": null}}}`, "cloud-init: init finished"},
		{"nothing yet", `{"v1": {"stage": null}}`, "cloud-init: starting"},
		{"hostile stage", `{"v1": {"stage": "x\n\u001b]0;pwned\u0007` + strings.Repeat("z", 100) + `"}}`, `cloud-init: x\x0a\x1b]0;pwned\x07` + strings.Repeat("z", 28) + "…"},
		{"invalid JSON", `{"v1": `, "cloud-init: status unreadable"},
		{"not an object", `{"v1": []}`, "cloud-init: status unreadable"},
		{"huge", `{"v1": {"stage": "` + strings.Repeat("s", maxCloudInitJSON) + `"}}`, "cloud-init: status.json too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseCloudInitStatus([]byte(tt.in)); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestClipGuestText(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 10, "plain"},
		{"tab\there", 20, `tab\x09here`},
		{"\x7fdel \u0085nel \u2028ls", 20, `\x7fdel \u0085nel \u2028ls`},
		{"\xc3", 5, `\xc3`},
		{"héllo wörld", 5, "héllo…"},
	}
	for _, tt := range tests {
		if got := clipGuestText(tt.in, tt.max); got != tt.want {
			t.Errorf("clipGuestText(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}
