package e2e

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/test/hostreq"
)

// TestStudio is the web page in a real browser. Alice runs `labvm
// studio` and, in headless Chromium running as her, creates an instance
// from the page, watches it reach Running without reloading, opens its
// web application through the gateway, and filters the list to hers.
// Bob, a contributor with his own studio and browser, sees her instance
// but no application links, and the gateway refuses him with labvmd's
// message. Carol, a third local user, cannot talk to Alice's studio at
// all. Alice stops her instance from the page. Screenshots go to
// $LABVM_E2E_ARTIFACTS (or test/e2e/testdata/out) /studio.
func TestStudio(t *testing.T) {
	image := requireHost(t)
	chromium := hostreq.RequireTool(t, "chromium", "chromium")
	binariesReadableByAll(t)
	p := "lvs" + randHex(3)
	testGroup(t, p)
	alice := testUser(t, p+"-alice", p)
	bob := testUser(t, p+"-bob", p)
	carol := testUser(t, p+"-carol", p)
	d := startDaemon(t, "--socket-group", p)
	// The test image has no Jupyter: it declares a web application on
	// port 8080, which busybox httpd serves once started.
	d.must("image", "import", "tiny", image, "--sha256", readSHA256(t, image), "--app", "web=8080/")
	d.must("role", "assign", alice.name, "contributor")
	d.must("role", "assign", bob.name, "contributor")
	shots := screenshotDir(t)

	aliceHome := userHome(t, alice)
	if out, err := exec.Command("setpriv", "--reuid="+strconv.Itoa(alice.uid), "--regid="+strconv.Itoa(alice.gid), "--init-groups",
		"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", alice.name+"@studio", "-f", filepath.Join(aliceHome, ".ssh", "id_ed25519")).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen as alice: %v\n%s", err, out)
	}
	// Bob's instance boots meanwhile, so Alice's list has someone else's.
	mustAs(t, d, bob, "create", "bob-dev", "--image", "tiny", "--size", "Standard_B1s", "--no-wait")

	aliceURL, aliceStderr := d.studio(t, alice, aliceHome)
	bobHome := userHome(t, bob)
	bobURL, _ := d.studio(t, bob, bobHome)
	aliceBrowser := browserAs(t, chromium, alice, aliceHome)
	bobBrowser := browserAs(t, chromium, bob, bobHome)
	// shot and run report to the chapter running (d.t), not the story.
	shot := func(ctx context.Context, name string) {
		d.t.Helper()
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			d.t.Errorf("screenshot %s: %v", name, err)
			return
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), buf, 0o644); err != nil {
			d.t.Error(err)
		}
	}
	run := func(ctx context.Context, what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
		d.t.Helper()
		tctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := chromedp.Do(tctx, actions...); err != nil {
			shot(ctx, "failed-"+strings.ReplaceAll(what, " ", "-"))
			d.t.Fatalf("%s: %v", what, err)
		}
	}

	d.chapter(t, "alice creates an instance from the page and watches it reach Running without reloading", func(t *testing.T) {
		run(aliceBrowser, "open the page", time.Minute,
			chromedp.Navigate(aliceURL),
			chromedp.WaitVisible(chromedp.CSS(`#live.on`)),
			// A reload would lose this.
			chromedp.Evaluate[chromedp.Void](`window.studioMarker = "same page", undefined`),
			chromedp.SetValue(chromedp.CSS(`#create-form input[name=name]`), "alice-dev"),
			chromedp.SetValue(chromedp.CSS(`#create-form select[name=size]`), "Standard_B1s"),
			chromedp.SetValue(chromedp.CSS(`#create-form select[name=image]`), "tiny"),
			chromedp.SetValue(chromedp.CSS(`#create-form textarea[name=startup_script]`), "#!/bin/sh\necho started by the studio test\n"),
		)
		// The form offers Alice's own key, read by her studio from ~/.ssh.
		var key string
		run(aliceBrowser, "pick the SSH key", 10*time.Second,
			into(chromedp.Evaluate[string](`(() => { const s = document.querySelector('#create-form select[name=ssh_key]');
				const o = Array.from(s.options).find(o => o.textContent === "~/.ssh/id_ed25519.pub");
				if (!o) return ""; s.value = o.value; return o.value; })()`), &key))
		if !strings.HasPrefix(key, "ssh-ed25519 ") {
			t.Fatalf("the create form does not offer ~/.ssh/id_ed25519.pub (got %q)", key)
		}
		run(aliceBrowser, "create", 30*time.Second,
			chromedp.Click(chromedp.CSS(`#create-form button.primary`)),
			chromedp.WaitVisible(chromedp.CSS(`#notice .ok`)),
		)
		var states []string
		var stage string // the operation's stage the row shows
		deadline := time.Now().Add(5 * time.Minute)
		for {
			var state string
			run(aliceBrowser, "read the row", 10*time.Second,
				into(chromedp.Evaluate[string](`(document.getElementById("inst-alice-dev") || {dataset: {}}).dataset.state || ""`), &state))
			if state == string(api.StateSettingUp) && stage == "" {
				run(aliceBrowser, "read the stage", 10*time.Second,
					into(chromedp.Evaluate[string](`(document.querySelector("#inst-alice-dev .stage") || {}).textContent || ""`), &stage))
			}
			if state != "" && (len(states) == 0 || states[len(states)-1] != state) {
				states = append(states, state)
				if state == "SettingUp" {
					shot(aliceBrowser, "studio-creating")
				}
			}
			if state == string(api.StateRunning) {
				break
			}
			if state == string(api.StateCreateFailed) || state == string(api.StateSetupFailed) || time.Now().After(deadline) {
				shot(aliceBrowser, "failed-create")
				t.Fatalf("alice-dev went through %v", states)
			}
			time.Sleep(300 * time.Millisecond)
		}
		var marker string
		run(aliceBrowser, "check for a reload", 10*time.Second, into(chromedp.Evaluate[string](`window.studioMarker || "reloaded"`), &marker))
		t.Logf("the row went through %v on the same page (%s), showing the stage %q", states, marker, stage)
		if stage == "" {
			t.Errorf("the row never showed the create's stage while SettingUp")
		}
		if marker != "same page" {
			t.Fatalf("the page was reloaded")
		}
		if len(states) < 2 {
			t.Fatalf("the row showed only %v: no live change seen", states)
		}
		var who string
		var audit []api.AuditEntry
		d.jsonOut(&audit, "audit", "--instance", "alice-dev")
		for _, e := range audit {
			if e.Action == "computes/write" && e.Outcome == "succeeded" {
				who = e.Caller
			}
		}
		if who != alice.name {
			t.Fatalf("the audit log has the create by %q, want %s: %+v", who, alice.name, audit)
		}
		shot(aliceBrowser, "studio-list")
	})

	mustAs(t, d, alice, "exec", "alice-dev", "--", "sh", "-c",
		"mkdir -p /tmp/www && echo hello-from-alice-dev > /tmp/www/index.html && busybox httpd -p 8080 -h /tmp/www")

	d.chapter(t, "alice opens her instance's details and its application through the gateway", func(t *testing.T) {
		var href, sshBlock string
		run(aliceBrowser, "details", 30*time.Second,
			chromedp.Navigate(aliceURL+"instances/alice-dev"),
			chromedp.WaitVisible(chromedp.CSS(`a.app[data-app="web"]`)),
			attr(chromedp.AttributeValue(chromedp.CSS(`a.app[data-app="web"]`), "href"), &href),
			into(chromedp.Text(chromedp.CSS(`#detail`)), &sshBlock),
		)
		for _, want := range []string{"labvm ssh alice-dev", "Host alice-dev", "StrictHostKeyChecking yes", "Creating disk", "Standard_B1s — 1 vCPU, 1 GiB"} {
			if !strings.Contains(sshBlock, want) {
				t.Errorf("the details lack %q:\n%s", want, sshBlock)
			}
		}
		shot(aliceBrowser, "studio-details")
		var body, host string
		run(aliceBrowser, "open the application", time.Minute,
			chromedp.Navigate(strings.TrimSuffix(aliceURL, "/")+href),
			chromedp.WaitReady(chromedp.CSS(`body`)),
			into(chromedp.Text(chromedp.CSS(`body`)), &body),
			into(chromedp.Evaluate[string](`location.host`), &host),
		)
		port := strings.TrimSuffix(strings.TrimPrefix(aliceURL, "http://127.0.0.1:"), "/")
		if !strings.Contains(body, "hello-from-alice-dev") || host != "web.alice-dev.localhost:"+port {
			shot(aliceBrowser, "failed-app")
			t.Fatalf("the application at %s showed %q", host, body)
		}
		shot(aliceBrowser, "studio-app")
	})

	d.chapter(t, "bob sees alice's instance without application links, and the gateway refuses him", func(t *testing.T) {
		var links int
		var text string
		run(bobBrowser, "bob's list", 30*time.Second,
			chromedp.Navigate(bobURL),
			chromedp.WaitVisible(chromedp.CSS(`#inst-alice-dev`)),
			chromedp.Navigate(bobURL+"instances/alice-dev"),
			chromedp.WaitVisible(chromedp.CSS(`#not-yours`)),
			into(chromedp.Evaluate[int](`document.querySelectorAll("a.app").length`), &links),
			into(chromedp.Text(chromedp.CSS(`#not-yours`)), &text),
		)
		if links != 0 || !strings.Contains(text, alice.name) {
			t.Fatalf("bob's page of alice-dev has %d application links; it says %q", links, text)
		}
		shot(bobBrowser, "studio-bob-details")
		port := strings.TrimSuffix(strings.TrimPrefix(bobURL, "http://127.0.0.1:"), "/")
		var refused, code string
		run(bobBrowser, "bob tries the gateway URL", 30*time.Second,
			chromedp.Navigate("http://web.alice-dev.localhost:"+port+"/"),
			chromedp.WaitVisible(chromedp.CSS(`#refused .error`)),
			into(chromedp.Text(chromedp.CSS(`#refused`)), &refused),
			attr(chromedp.AttributeValue(chromedp.CSS(`#refused .error`), "data-code"), &code),
		)
		t.Logf("bob at the gateway: %s", refused)
		if code != string(api.CodePermissionDenied) || !strings.Contains(refused, alice.name) || strings.Contains(refused, "hello-from-alice-dev") {
			t.Fatalf("bob at alice-dev's application got %s: %q", code, refused)
		}
		shot(bobBrowser, "studio-bob-refused")
		// labvmd audited the refusal as bob's: the page spoke as him.
		var audit []api.AuditEntry
		d.jsonOut(&audit, "audit", "--instance", "alice-dev", "--caller", bob.name)
		denied := 0
		for _, e := range audit {
			if strings.HasPrefix(e.Action, "computes/applicationaccess/action") && e.Outcome == "denied" {
				denied++
			}
		}
		if denied == 0 {
			t.Fatalf("the audit log has no refused application access by %s: %+v", bob.name, audit)
		}
	})

	d.chapter(t, "a third local user cannot connect to alice's studio", func(t *testing.T) {
		port := strings.TrimSuffix(strings.TrimPrefix(aliceURL, "http://127.0.0.1:"), "/")
		if got := httpGetAs(t, carol, port); got != "" {
			t.Fatalf("carol got %q from alice's studio, want nothing", got)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(aliceStderr(), "user "+carol.name) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if s := aliceStderr(); !strings.Contains(s, "refused a connection") || !strings.Contains(s, "user "+carol.name+" (uid "+strconv.Itoa(carol.uid)+")") {
			t.Fatalf("alice's studio did not report refusing %s; stderr:\n%s", carol.name, s)
		}
		// Bob's browser is a third party to alice's studio too.
		var body string
		ctx, cancel := context.WithTimeout(bobBrowser, 20*time.Second)
		defer cancel()
		_ = chromedp.Do(ctx, chromedp.Navigate(aliceURL)) // fails: the connection is closed without an answer
		_ = chromedp.Do(ctx, into(chromedp.Evaluate[string](`document.querySelector("meta[name=studio-token]") ? "got the page" : ""`), &body))
		if body != "" {
			t.Fatalf("bob's browser got alice's studio page")
		}
	})

	d.chapter(t, "alice filters to hers, then stops her instance from the page", func(t *testing.T) {
		var bobShown, bobHidden, aliceShown bool
		run(aliceBrowser, "filter", time.Minute,
			chromedp.Navigate(aliceURL),
			chromedp.WaitVisible(chromedp.CSS(`#live.on`)),
			chromedp.WaitVisible(chromedp.CSS(`#inst-bob-dev`)),
			into(chromedp.Evaluate[bool](`getComputedStyle(document.getElementById("inst-bob-dev")).display !== "none"`), &bobShown),
			chromedp.Click(chromedp.CSS(`#mine`)),
			into(chromedp.Evaluate[bool](`getComputedStyle(document.getElementById("inst-bob-dev")).display === "none"`), &bobHidden),
			into(chromedp.Evaluate[bool](`getComputedStyle(document.getElementById("inst-alice-dev")).display !== "none"`), &aliceShown),
		)
		if !bobShown || !bobHidden || !aliceShown {
			t.Fatalf("mine only: bob-dev shown before %v, hidden after %v; alice-dev shown %v", bobShown, bobHidden, aliceShown)
		}
		shot(aliceBrowser, "studio-mine")

		var state string
		run(aliceBrowser, "stop", 3*time.Minute,
			chromedp.Navigate(aliceURL+"instances/alice-dev"),
			chromedp.WaitVisible(chromedp.CSS(`#live.on`)),
			chromedp.Click(chromedp.CSS(`#detail form[action$="/stop"] button`)),
			chromedp.WaitVisible(chromedp.CSS(`#notice .ok`)),
			chromedp.WaitVisible(chromedp.CSS(`#detail-state.Stopped`)),
			into(chromedp.Text(chromedp.CSS(`#detail-state`)), &state),
		)
		var inst api.Instance
		d.jsonOut(&inst, "show", "alice-dev")
		if state != "Stopped" || inst.State != api.StateStopped {
			t.Fatalf("after Stop the page shows %q and labvmd %s", state, inst.State)
		}
		shot(aliceBrowser, "studio-stopped")
	})

	d.chapter(t, "alice deletes her instance, typing its name to confirm", func(t *testing.T) {
		var notice string
		run(aliceBrowser, "delete without the name", 30*time.Second,
			chromedp.Navigate(aliceURL),
			chromedp.WaitVisible(chromedp.CSS(`#live.on`)),
			chromedp.Click(chromedp.CSS(`#inst-alice-dev details.delete summary`)),
			chromedp.Click(chromedp.CSS(`#inst-alice-dev details.delete button`)),
			chromedp.WaitVisible(chromedp.CSS(`#notice .error`)),
			into(chromedp.Text(chromedp.CSS(`#notice`)), &notice),
		)
		if !strings.Contains(notice, "not deleted") {
			t.Fatalf("an unconfirmed delete said %q", notice)
		}
		d.jsonOut(&api.Instance{}, "show", "alice-dev") // still there
		var gone bool
		run(aliceBrowser, "delete", 2*time.Minute,
			chromedp.SetValue(chromedp.CSS(`#inst-alice-dev details.delete input[name=confirm]`), "alice-dev"),
			chromedp.Click(chromedp.CSS(`#inst-alice-dev details.delete button`)),
			chromedp.WaitVisible(chromedp.CSS(`#notice .ok`)),
			// The row goes when labvmd's event says so.
			into(chromedp.Poll[bool](`!document.getElementById("inst-alice-dev")`, chromedp.WithPollingInterval(200*time.Millisecond)), &gone),
		)
		d.mustFail("not found", "show", "alice-dev")
		if !gone {
			t.Fatal("alice-dev's row is still on the page")
		}
	})
}

// screenshotDir is where the test leaves its screenshots: they outlive
// the test, unlike t.TempDir.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("LABVM_E2E_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("testdata", "out")
	}
	dir = filepath.Join(dir, "studio")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	t.Logf("screenshots in %s", abs)
	return dir
}

// userHome makes a home directory for a test user (they are made
// without one), with ~/.ssh; removed after the test.
func userHome(t *testing.T, u unixUser) string {
	t.Helper()
	home, err := os.MkdirTemp("/var/tmp", "labvm-e2e-home-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(home) })
	if err := os.Mkdir(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{home, filepath.Join(home, ".ssh")} {
		if err := os.Chown(p, u.uid, u.gid); err != nil {
			t.Fatal(err)
		}
	}
	return home
}

// studio runs `labvm studio` as u until the test ends and returns its
// URL and its stderr so far.
func (d *labvmd) studio(t *testing.T, u unixUser, home string) (url string, stderr func() string) {
	t.Helper()
	args := []string{"studio"}
	cmd := exec.Command("setpriv", append([]string{"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--init-groups", bins.labvm}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LABVM_SOCKET=" + d.socket, "HOME=" + home}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb lockedBuilder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("labvm studio as %s still running 10s after Ctrl-C", u.name)
			_ = cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("labvm studio as %s, stderr:\n%s", u.name, errb.String())
		}
	})
	line := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		l, _ := br.ReadString('\n')
		line <- l
		_, _ = io.Copy(io.Discard, br) // keep the pipe drained
	}()
	select {
	case l := <-line:
		const prefix = "labvm studio is at "
		rest, ok := strings.CutPrefix(l, prefix)
		url, _, _ = strings.Cut(rest, " ")
		if !ok || !strings.HasPrefix(url, "http://127.0.0.1:") {
			t.Fatalf("labvm studio as %s printed %q; stderr: %s", u.name, l, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("labvm studio as %s printed nothing in 30s; stderr: %s", u.name, errb.String())
	}
	return url, errb.String
}

// browserAs starts headless Chromium running as u (its sockets are u's,
// which is what the studio's listener checks) with a fresh profile, and
// returns its context; it ends with the test.
func browserAs(t *testing.T, chromium string, u unixUser, home string) context.Context {
	t.Helper()
	profile := filepath.Join(home, "chromium-profile")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.DisableGPU, chromedp.NoSandbox, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1360, 900),
		chromedp.NoInheritEnv,
		chromedp.Env("HOME="+home, "PATH=/usr/bin:/bin", "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_CACHE_HOME="+filepath.Join(home, ".cache")),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.SysProcAttr = &syscall.SysProcAttr{
				Credential: &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)},
				Pdeathsig:  syscall.SIGKILL,
			}
		}),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(func(format string, args ...any) { t.Logf("chromium as "+u.name+": "+format, args...) }))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first run starts the browser, whose life is then that of the
	// context it ran on: ctx, not one with a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium as %s: %v", u.name, err)
	}
	return ctx
}

// into runs a and keeps its result in dst, so results can be read
// amid a chromedp.Do of steps.
func into[T any](a chromedp.Action[T], dst *T) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		v, err := a(ctx, t)
		*dst = v
		return chromedp.Void{}, err
	}
}

// attr is into for an attribute's value.
func attr(a chromedp.Action[chromedp.AttributeResult], dst *string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		v, err := a(ctx, t)
		*dst = v.Value
		return chromedp.Void{}, err
	}
}
