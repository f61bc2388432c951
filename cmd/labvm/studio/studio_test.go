package studio

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// otherUser is an account every Debian host has, to own instances that
// are not the test's: nobody, or daemon when the test runs as nobody.
var otherUser = func() string {
	if u, err := user.Current(); err == nil && u.Username == "nobody" {
		return "daemon"
	}
	return "nobody"
}()

// newStudio starts a daemon over the fake hypervisor where the test's
// own user is an owner, and a page server on it.
func newStudio(t *testing.T) (*Server, *daemontest.Daemon) {
	t.Helper()
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), func(tx *store.Tx) error {
		if os.Geteuid() == 0 {
			return nil // root is always an owner
		}
		u, err := user.Current()
		if err != nil {
			return err
		}
		uid := os.Geteuid()
		return tx.PutRole(store.RoleAssignment{Principal: u.Username, UID: &uid, Role: "owner", AssignedBy: "test", AssignedAt: time.Now()})
	})
	s, err := New(Config{Client: td.Client, Logf: t.Logf,
		SSHConfig: func(inst api.Instance) (string, error) { return "Host " + inst.Name + "\n", nil }})
	if err != nil {
		t.Fatal(err)
	}
	return s, td
}

const studioHost = "127.0.0.1:8700"

// get sends a GET to the page as the browser would reach it.
func get(s *Server, host, path string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "http://"+host+path, nil)
	r.Host = host
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

// post sends a change the way the page's script does: form-encoded,
// with the token and this origin; change edits the request first.
func post(s *Server, path string, form url.Values, change func(*http.Request)) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "http://"+studioHost+path, strings.NewReader(form.Encode()))
	r.Host = studioHost
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Origin", "http://"+studioHost)
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	r.Header.Set(tokenHeader, s.Token())
	if change != nil {
		change(r)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func mustCreate(t *testing.T, td *daemontest.Daemon, req api.CreateInstanceRequest) {
	t.Helper()
	if _, err := td.Create(t, req); err != nil {
		t.Fatalf("create %s: %v", req.Name, err)
	}
}

func TestListRendersInstancesQuotaAndCatalogue(t *testing.T) {
	s, td := newStudio(t)
	mustCreate(t, td, daemontest.TinyReq("mine-dev"))
	theirs := daemontest.TinyReq("theirs-dev")
	theirs.AssignTo = otherUser
	mustCreate(t, td, theirs)

	w := get(s, studioHost, "/")
	body := w.Body.String()
	if w.Code != http.StatusOK {
		t.Fatalf("GET / = %d:\n%s", w.Code, body)
	}
	for _, want := range []string{
		`id="inst-mine-dev" data-name="mine-dev" data-state="Running" data-mine="1"`,
		// created by the test's user for another: still "mine", as for
		// `labvm list --mine`
		`id="inst-theirs-dev" data-name="theirs-dev" data-state="Running" data-mine="1"`,
		`<td>` + otherUser + `</td>`,
		// the size picker: vCPU, memory and family from the catalogue
		`<option value="Standard_B1s">Standard_B1s — 1 vCPU, 1 GiB, family standardBSFamily</option>`,
		`<option value="tiny">tiny (jupyter, jupyterlab, rstudio)</option>`,
		`name="assign_to"`, // the test's user is an owner
		`<meta name="studio-token" content="` + s.Token() + `">`,
		`<td>total</td><td>2</td>`, // quota: two B1s instances, one core each
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("page:\n%s", body)
	}

	t.Run("mine only is kept in the URL", func(t *testing.T) {
		if b := get(s, studioHost, "/?mine=1").Body.String(); !strings.Contains(b, `<table id="instances" class="mine-only">`) || !strings.Contains(b, `id="mine" checked`) {
			t.Fatalf("?mine=1 does not start filtered")
		}
	})
	t.Run("the script and stylesheet are served, the templates not", func(t *testing.T) {
		for path, want := range map[string]int{"/static/studio.js": 200, "/static/studio.css": 200, "/static/studio.html": 404, "/static/": 404} {
			if w := get(s, studioHost, path); w.Code != want {
				t.Errorf("GET %s = %d, want %d", path, w.Code, want)
			}
		}
	})
	t.Run("the list fragment has the same rows", func(t *testing.T) {
		b := get(s, studioHost, "/fragments/list").Body.String()
		if strings.Count(b, "<tr id=\"inst-") != 2 || strings.Contains(b, "<html") {
			t.Fatalf("fragment:\n%s", b)
		}
	})
}

func TestCreateFromTheForm(t *testing.T) {
	s, td := newStudio(t)
	form := url.Values{"name": {"form-dev"}, "size": {"Standard_B1s"}, "image": {"tiny"},
		"setup_script": {"#!/bin/sh\r\necho hi\r\n"}, "token": {"ignored: the header wins"}}
	w := post(s, "/instances", form, nil)
	if w.Code != http.StatusAccepted || !strings.Contains(w.Body.String(), "Creating form-dev") {
		t.Fatalf("POST /instances = %d:\n%s", w.Code, w.Body)
	}
	inst, err := td.Client.Instance(t.Context(), "form-dev")
	if err != nil {
		t.Fatalf("the instance was not created: %v", err)
	}
	if inst.Size.Name != "Standard_B1s" || !inst.SetupScript {
		t.Fatalf("created %+v, want Standard_B1s with a setup script", inst)
	}
	t.Run("the form's token field works without the header", func(t *testing.T) {
		form := url.Values{"name": {"field-dev"}, "size": {"Standard_B1s"}, "image": {"tiny"}, "token": {s.Token()}}
		w := post(s, "/instances", form, func(r *http.Request) { r.Header.Del(tokenHeader) })
		if w.Code != http.StatusAccepted {
			t.Fatalf("POST with the token in the form = %d:\n%s", w.Code, w.Body)
		}
	})
}

func TestErrorsShowTheDaemonsMessageAndHint(t *testing.T) {
	s, td := newStudio(t)
	mustCreate(t, td, daemontest.TinyReq("taken-dev"))
	tests := []struct {
		name     string
		path     string
		form     url.Values
		status   int
		code     api.Code
		wantText string
	}{
		{"unknown size", "/instances", url.Values{"name": {"new-dev"}, "size": {"Huge_X99"}, "image": {"tiny"}},
			http.StatusBadRequest, api.CodeInvalidArgument, "Huge_X99"},
		{"bad name", "/instances", url.Values{"name": {"X"}, "size": {"Standard_B1s"}, "image": {"tiny"}},
			http.StatusBadRequest, api.CodeInvalidArgument, "invalid instance name"},
		{"name taken", "/instances", url.Values{"name": {"taken-dev"}, "size": {"Standard_B1s"}, "image": {"tiny"}},
			http.StatusConflict, api.CodeAlreadyExists, "taken-dev"},
		{"start a missing instance", "/instances/nope-dev/start", nil,
			http.StatusNotFound, api.CodeNotFound, `instance &#34;nope-dev&#34; not found`},
		{"start a running one", "/instances/taken-dev/start", nil,
			http.StatusConflict, api.CodeConflict, "taken-dev"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := post(s, tt.path, tt.form, nil)
			body := w.Body.String()
			if w.Code != tt.status || !strings.Contains(body, `data-code="`+string(tt.code)+`"`) || !strings.Contains(body, tt.wantText) {
				t.Fatalf("got %d, want %d %s mentioning %q:\n%s", w.Code, tt.status, tt.code, tt.wantText, body)
			}
			// The daemon's own words, hint included, reach the page.
			var want *api.Error
			switch {
			case strings.HasPrefix(tt.path, "/instances/nope-dev"):
				_, err := td.Client.Start(t.Context(), "nope-dev")
				want = asAPIError(err)
			case strings.HasPrefix(tt.path, "/instances/taken-dev"):
				_, err := td.Client.Start(t.Context(), "taken-dev")
				want = asAPIError(err)
			default:
				_, err := td.Client.CreateInstance(t.Context(), api.CreateInstanceRequest{Name: tt.form.Get("name"), Size: tt.form.Get("size"), Image: tt.form.Get("image")})
				want = asAPIError(err)
			}
			if !strings.Contains(body, htmlEscape(want.Message)) {
				t.Errorf("the notice lacks the daemon's message %q", want.Message)
			}
			if want.Hint != "" && !strings.Contains(body, "Hint: "+htmlEscape(want.Hint)) {
				t.Errorf("the notice lacks the daemon's hint %q", want.Hint)
			}
		})
	}
	if _, err := td.Client.Instance(t.Context(), "new-dev"); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("a refused create left an instance behind: %v", err)
	}
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s)
}

// TestChangesFromOtherSitesAreRefused: a page of another site, open in
// the same user's browser, can send requests to the studio's port; none
// may change anything.
func TestChangesFromOtherSitesAreRefused(t *testing.T) {
	s, td := newStudio(t)
	form := url.Values{"name": {"csrf-dev"}, "size": {"Standard_B1s"}, "image": {"tiny"}}
	tests := []struct {
		name   string
		change func(*http.Request)
		want   string
	}{
		{"no token", func(r *http.Request) { r.Header.Del(tokenHeader) }, "does not carry this page&#39;s token"},
		{"a wrong token", func(r *http.Request) { r.Header.Set(tokenHeader, strings.Repeat("0", 64)) }, "does not carry this page&#39;s token"},
		{"a token in the form that is wrong", func(r *http.Request) {
			r.Header.Del(tokenHeader)
			r.Body = http.NoBody
		}, "does not carry this page&#39;s token"},
		{"another origin, with the token", func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") }, "came from another site (http://evil.example)"},
		{"another port of 127.0.0.1", func(r *http.Request) { r.Header.Set("Origin", "http://127.0.0.1:9999") }, "came from another site"},
		{"an application's origin", func(r *http.Request) { r.Header.Set("Origin", "http://jupyter.csrf-dev.localhost:8700") }, "came from another site"},
		{"Sec-Fetch-Site cross-site", func(r *http.Request) {
			r.Header.Del("Origin")
			r.Header.Set("Sec-Fetch-Site", "cross-site")
		}, "Sec-Fetch-Site: cross-site"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := post(s, "/instances", form, tt.change)
			if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), tt.want) {
				t.Fatalf("got %d, want 403 saying %q:\n%s", w.Code, tt.want, w.Body)
			}
		})
	}
	t.Run("a rebound host name gets nothing, not even the list", func(t *testing.T) {
		for _, host := range []string{"evil.example:8700", "127.0.0.1.nip.io:8700", "10.0.0.1:8700", "localhost.evil.example"} {
			if w := get(s, host, "/"); w.Code != http.StatusMisdirectedRequest || strings.Contains(w.Body.String(), "studio-token") {
				t.Errorf("GET / with Host %s = %d", host, w.Code)
			}
		}
	})
	if _, err := td.Client.Instance(t.Context(), "csrf-dev"); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("a refused request created the instance: %v", err)
	}
	t.Run("the same request from the page passes", func(t *testing.T) {
		if w := post(s, "/instances", form, nil); w.Code != http.StatusAccepted {
			t.Fatalf("got %d:\n%s", w.Code, w.Body)
		}
	})
}

func TestDeleteNeedsTheNameTyped(t *testing.T) {
	s, td := newStudio(t)
	mustCreate(t, td, daemontest.TinyReq("del-dev"))
	for _, confirm := range []string{"", "del", "other-dev"} {
		w := post(s, "/instances/del-dev/delete", url.Values{"confirm": {confirm}}, nil)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "type the instance") {
			t.Fatalf("delete confirmed with %q = %d:\n%s", confirm, w.Code, w.Body)
		}
	}
	if _, err := td.Client.Instance(t.Context(), "del-dev"); err != nil {
		t.Fatalf("an unconfirmed delete removed the instance: %v", err)
	}
	w := post(s, "/instances/del-dev/delete", url.Values{"confirm": {"del-dev"}}, nil)
	if w.Code != http.StatusAccepted || !strings.Contains(w.Body.String(), "Deleting del-dev") {
		t.Fatalf("confirmed delete = %d:\n%s", w.Code, w.Body)
	}
}

func TestDetailsAndApplications(t *testing.T) {
	s, td := newStudio(t)
	own := daemontest.TinyReq("own-dev")
	own.SSHPublicKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGDf+vlQWpXprKNh592udedeuAMVF+8vuNs371GV7i7/ test@labvm"
	own.IdleShutdown = "30m"
	mustCreate(t, td, own)
	if _, err := td.Client.AddSchedule(context.Background(), "own-dev", api.CreateScheduleRequest{Stop: "0 19 * * 1-5", Timezone: "UTC"}); err != nil {
		t.Fatal(err)
	}
	theirs := daemontest.TinyReq("their-dev")
	theirs.AssignTo = otherUser
	mustCreate(t, td, theirs)

	t.Run("the own user sees the applications and SSH", func(t *testing.T) {
		b := get(s, studioHost, "/instances/own-dev").Body.String()
		for _, want := range []string{
			`<a class="app" href="/apps/own-dev/jupyter"`,
			"http://jupyter.own-dev.localhost:8700/tree",
			"labvm ssh own-dev", "Host own-dev",
			"<strong>create</strong> succeeded", // its operation, with stages
			"Standard_B1s — 1 vCPU, 1 GiB, family standardBSFamily",
			"120 GiB",
			"stops after 30m unused", // the idle shutdown, before its first look
			"#1 stop <code>0 19 * * 1-5</code> UTC",
		} {
			if !strings.Contains(b, want) {
				t.Errorf("details lack %q", want)
			}
		}
		if t.Failed() {
			t.Logf("details:\n%s", b)
		}
	})
	t.Run("others see no application links", func(t *testing.T) {
		b := get(s, studioHost, "/instances/their-dev").Body.String()
		if strings.Contains(b, `class="app"`) || strings.Contains(b, "labvm ssh their-dev") || !strings.Contains(b, "Only "+otherUser+", this instance's own user") {
			t.Fatalf("details of another's instance:\n%s", b)
		}
	})
	t.Run("the app link goes to the gateway", func(t *testing.T) {
		w := get(s, studioHost, "/apps/own-dev/jupyterlab")
		if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "http://jupyterlab.own-dev.localhost:8700/lab" {
			t.Fatalf("got %d to %q", w.Code, w.Header().Get("Location"))
		}
	})
	t.Run("the gateway refuses another's instance with labvmd's message", func(t *testing.T) {
		w := get(s, "jupyter.their-dev.localhost:8700", "/tree")
		b := w.Body.String()
		if w.Code != http.StatusForbidden || !strings.Contains(b, `data-code="PermissionDenied"`) || !strings.Contains(b, otherUser) {
			t.Fatalf("got %d:\n%s", w.Code, b)
		}
		// The page's look comes inline (the application's host has no
		// /static/), allowed by its hash and nothing else inline.
		_, style, _ := strings.Cut(b, "<style>")
		style, _, _ = strings.Cut(style, "</style>")
		sum := sha256.Sum256([]byte(style))
		csp := w.Header().Get("Content-Security-Policy")
		if style == "" || !strings.Contains(csp, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'") || strings.Contains(csp, "unsafe-inline") {
			t.Fatalf("the inline style does not match the policy %q", csp)
		}
		if !strings.Contains(b, `href="http://127.0.0.1:8700/"`) {
			t.Fatalf("the refusal has no way back to the page:\n%s", b)
		}
	})
	t.Run("the gateway names an unknown application", func(t *testing.T) {
		w := get(s, "nope.own-dev.localhost:8700", "/")
		if w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "its applications: jupyter, jupyterlab, rstudio") {
			t.Fatalf("got %d:\n%s", w.Code, w.Body)
		}
	})
	t.Run("operations are the instance's own, not an earlier one's of its name", func(t *testing.T) {
		mustCreate(t, td, daemontest.TinyReq("again-dev"))
		op, err := td.Client.Delete(t.Context(), "again-dev")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := td.Client.Wait(t.Context(), op.ID, nil); err != nil {
			t.Fatal(err)
		}
		mustCreate(t, td, daemontest.TinyReq("again-dev"))
		b := get(s, studioHost, "/instances/again-dev").Body.String()
		if strings.Count(b, `<div class="op `) != 1 || !strings.Contains(b, "<strong>create</strong> succeeded") || strings.Contains(b, op.ID) {
			t.Fatalf("details of the second again-dev list other operations (the first one's delete is %s):\n%s", op.ID, b)
		}
	})
	t.Run("a missing instance", func(t *testing.T) {
		w := get(s, studioHost, "/instances/gone-dev")
		if w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), `instance &#34;gone-dev&#34; not found`) {
			t.Fatalf("got %d:\n%s", w.Code, w.Body)
		}
	})
}

// TestEventsRelayStateChanges: a page following /events sees an
// instance's row change as labvmd reports its operation, without asking.
func TestEventsRelayStateChanges(t *testing.T) {
	s, td := newStudio(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go s.Run(ctx)
	hs := httptest.NewServer(s)
	defer hs.Close()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	// The hub may connect to labvmd after the page did: create only once
	// it follows the daemon's stream.
	waitFor(t, func() bool { return s.hub.following() })
	mustCreate(t, td, daemontest.TinyReq("live-dev"))

	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	seen := map[string]bool{}
	event := ""
	deadline := time.AfterFunc(10*time.Second, cancel)
	defer deadline.Stop()
	for sc.Scan() {
		line := sc.Text()
		if e, ok := strings.CutPrefix(line, "event: "); ok {
			event = e
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		switch event {
		case "instance":
			var msg struct {
				Name, HTML, State string
			}
			if err := json.Unmarshal([]byte(data), &msg); err != nil {
				t.Fatalf("event data %q: %v", data, err)
			}
			if msg.Name != "live-dev" || !strings.Contains(msg.HTML, `id="inst-live-dev"`) {
				t.Fatalf("unexpected row %+v", msg)
			}
			// A row of an instance being created says at which stage.
			if msg.State == string(api.StateCreating) && strings.Contains(msg.HTML, `<div class="stage">`) {
				seen["stage"] = true
			}
			seen["state "+msg.State] = true
		case "quota":
			seen["quota"] = true
		}
		if seen["state Running"] && seen["quota"] && seen["stage"] {
			break
		}
	}
	if !seen["state Running"] || !seen["quota"] || !seen["stage"] {
		t.Fatalf("the page saw %v, want the row reach Running and the quota", seen)
	}
}

// TestEventsRelayStatesWithoutOperations: a state that changes with no
// operation (reconcile finding a domain gone writes it straight to the
// store) reaches an open page at once, not at the next event.
func TestEventsRelayStatesWithoutOperations(t *testing.T) {
	s, td := newStudio(t)
	mustCreate(t, td, daemontest.TinyReq("quiet-dev"))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go s.Run(ctx)
	hs := httptest.NewServer(s)
	defer hs.Close()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitFor(t, func() bool { return s.hub.following() })
	if err := td.Store().Update(func(tx *store.Tx) error {
		inst, err := tx.InstanceByName("quiet-dev")
		if err != nil {
			return err
		}
		inst.State, inst.StateReason = vm.StateStopped, "found not running"
		return tx.PutInstance(inst)
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.AfterFunc(10*time.Second, cancel)
	defer deadline.Stop()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var msg struct{ Name, HTML, State string }
		if err := json.Unmarshal([]byte(data), &msg); err != nil {
			t.Fatalf("event data %q: %v", data, err)
		}
		if msg.Name == "quiet-dev" && msg.State == string(api.StateStopped) && strings.Contains(msg.HTML, "Stopped") {
			return
		}
	}
	t.Fatal("the page never saw quiet-dev become Stopped")
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClassifyHost(t *testing.T) {
	tests := []struct {
		host string
		want hostInfo
	}{
		{"127.0.0.1:8700", hostInfo{kind: hostStudio}},
		{"127.0.0.1", hostInfo{kind: hostStudio}},
		{"[::1]:8700", hostInfo{kind: hostStudio}},
		{"localhost:9000", hostInfo{kind: hostStudio}},
		{"LOCALHOST.:9000", hostInfo{kind: hostStudio}},
		{"jupyter.alice-dev.localhost:8700", hostInfo{kind: hostApp, app: "jupyter", instance: "alice-dev"}},
		{"my.app.alice-dev.localhost", hostInfo{kind: hostApp, app: "my.app", instance: "alice-dev"}},
		{"alice-dev.localhost:8700", hostInfo{}},
		{".alice-dev.localhost", hostInfo{}},
		{"evil.example", hostInfo{}},
		{"192.168.1.5:8700", hostInfo{}},
		{"localhost.evil.example:8700", hostInfo{}},
		{"", hostInfo{}},
	}
	for _, tt := range tests {
		if got := classifyHost(tt.host); got != tt.want {
			t.Errorf("classifyHost(%q) = %+v, want %+v", tt.host, got, tt.want)
		}
	}
}

// TestGatewayPassesWebSockets: an application's WebSocket (Jupyter's
// kernels) goes through the gateway as an upgrade, with the Host the
// browser used, and then carries bytes both ways. The fake hypervisor
// carries no bytes, so the tunnel here is a local echo server.
func TestGatewayPassesWebSockets(t *testing.T) {
	s, td := newStudio(t)
	mustCreate(t, td, daemontest.TinyReq("ws-dev"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type seen struct{ host, upgrade, path string }
	got := make(chan seen, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		got <- seen{req.Host, req.Header.Get("Upgrade"), req.URL.Path}
		_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_, _ = io.Copy(conn, br) // echo
	}()
	var dialled string
	s.apps.dial = func(ctx context.Context, instance string, port int) (net.Conn, error) {
		dialled = fmt.Sprintf("%s:%d", instance, port)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	}
	hs := httptest.NewServer(s)
	defer hs.Close()
	conn, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	host := "jupyterlab.ws-dev.localhost:" + strconv.Itoa(hs.Listener.Addr().(*net.TCPAddr).Port)
	fmt.Fprintf(conn, "GET /api/kernels/1/channels HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", host)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("upgrade through the gateway = %d:\n%s", resp.StatusCode, b)
	}
	app := <-got
	if want := (seen{host, "websocket", "/api/kernels/1/channels"}); app != want || dialled != "ws-dev:8888" {
		t.Fatalf("the application saw %+v through a tunnel to %s, want %+v through ws-dev:8888", app, dialled, want)
	}
	if _, err := io.WriteString(conn, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through the upgraded connection: %q, %v", buf, err)
	}
}

// TestCreateFormFollowsTheRole: the form is offered to those whose role
// lets them create, assign-to only to owners; labvmd still decides.
func TestCreateFormFollowsTheRole(t *testing.T) {
	s, _ := newStudio(t)
	tests := []struct {
		role            string
		rights          []string
		form, assignTo  bool
		refusedMentions string
	}{
		{"reader", []string{"computes/read"}, false, false, "Your role (reader) does not let you create"},
		{"contributor", []string{"computes/read", api.RightWrite}, true, false, ""},
		{api.RoleOwner, []string{"computes/read", api.RightWrite, "roles/write"}, true, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.role, func(t *testing.T) {
			f := s.createForm(t.Context(), me{WhoAmI: api.WhoAmI{User: "rita", Role: tt.role, Rights: tt.rights}})
			var b strings.Builder
			if err := tmpl.ExecuteTemplate(&b, "create", page{Create: f}); err != nil {
				t.Fatal(err)
			}
			html := b.String()
			if strings.Contains(html, `id="create-form"`) != tt.form || strings.Contains(html, `name="assign_to"`) != tt.assignTo {
				t.Fatalf("form shown %v (want %v), assign-to %v (want %v):\n%s", strings.Contains(html, `id="create-form"`), tt.form, strings.Contains(html, `name="assign_to"`), tt.assignTo, html)
			}
			if tt.refusedMentions != "" && !strings.Contains(html, tt.refusedMentions) {
				t.Fatalf("the refusal does not say %q:\n%s", tt.refusedMentions, html)
			}
		})
	}
}
