package e2e

import (
	"context"
	"encoding/json"
	"fmt"
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

// TestDataScienceInstance is the data scientist's story on the image `make
// ds-image` builds (LABVM_DS_IMAGE, default images/out/ds-debian-12.qcow2):
// an admin creates an instance for Alice; she opens Jupyter with `labvm
// open` in a real browser (headless Chromium, as her own Unix user), runs
// pandas and scikit-learn in a Python notebook and R in an R notebook
// (kernels over websockets through the tunnel), finds herself in a Jupyter
// terminal, makes a venv registered as a kernel and installs an R package
// into her library; after a stop and a start her notebooks, venv kernel and
// R package are still there. Carol's `labvm open` is refused and her
// browser gets nothing from Alice's local port.
func TestDataScienceInstance(t *testing.T) {
	requireHost(t)
	image := os.Getenv("LABVM_DS_IMAGE")
	if image == "" {
		image, _ = filepath.Abs("../../images/out/ds-debian-12.qcow2")
	}
	if _, err := os.Stat(image); err != nil {
		hostreq.Require(t, false, fmt.Sprintf("data-science image %s not found (run `make ds-image`)", image))
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		hostreq.Require(t, false, "chromium not installed (run `make host`)")
	}
	binariesReadableByAll(t)
	group := "lvds" + randHex(3)
	testGroup(t, group)
	alice := testUser(t, group+"-alice", group)
	carol := testUser(t, group+"-carol", group)
	d := startDaemon(t, "--socket-group", group, "--ready-timeout", "15m")
	d.must("image", "import", "ds", image, "--app", "jupyter=8888/tree")

	t.Log("an admin creates a data-science instance for Alice (TCG: minutes)")
	start := time.Now()
	d.mustSlow(20*time.Minute, "create", "alice-ds", "--image", "ds", "--size", "Standard_B2s", "--assign-to", alice.name)
	t.Logf("create → Running in %s", time.Since(start).Round(time.Second))
	var inst api.Instance
	d.jsonOut(&inst, "show", "alice-ds")
	if inst.GuestUser != alice.name {
		t.Fatalf("guest user %q, want %q", inst.GuestUser, alice.name)
	}

	d.chapter(t, "the first boot is clean: no failed unit, sshd runs, cloud-init took the seed as valid, the hostname resolves", func(t *testing.T) {
		// A seed cloud-init cannot apply shows here: with no host key
		// written (the image has none of its own), ssh.service fails.
		r := d.as(alice, "exec", "alice-ds", "--", "systemctl", "--failed", "--no-legend", "--plain")
		if r.code != 0 || strings.TrimSpace(r.stdout) != "" {
			j := d.as(alice, "exec", "alice-ds", "--", "sudo", "journalctl", "-b", "--no-pager",
				"-u", "ssh.service", "-u", "cloud-init-local.service", "-u", "cloud-init.service")
			t.Fatalf("systemctl --failed: exit %d, stdout %q, stderr %q\njournal:\n%s%s", r.code, r.stdout, r.stderr, j.stdout, j.stderr)
		}
		if r := d.as(alice, "exec", "alice-ds", "--", "systemctl", "is-active", "ssh.service"); r.code != 0 || strings.TrimSpace(r.stdout) != "active" {
			t.Fatalf("ssh.service: exit %d, %q %q", r.code, r.stdout, r.stderr)
		}
		// cloud-init accepted labvm's seed as valid cloud-config (it only
		// warns, in its log, when the seed breaks its schema).
		if r := d.as(alice, "exec", "alice-ds", "--", "sudo", "grep", "-i", "invalid cloud-config", "/var/log/cloud-init.log"); r.code != 1 {
			t.Errorf("cloud-init's log on labvm's seed (grep exit %d, want 1: no match):\n%s%s", r.code, r.stdout, r.stderr)
		}
		// The guest's own name resolves (sudo looks it up, and says so
		// when it cannot).
		if r := d.as(alice, "exec", "alice-ds", "--", "sh", "-c", `getent hosts "$(hostname)"`); r.code != 0 || !strings.Contains(r.stdout, "alice-ds") {
			t.Errorf("getent hosts alice-ds: exit %d, %q %q", r.code, r.stdout, r.stderr)
		}
		if r := d.as(alice, "exec", "alice-ds", "--", "sudo", "true"); r.code != 0 || strings.Contains(r.stderr, "unable to resolve host") {
			t.Errorf("sudo true: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	port := freeLocalPort(t)
	stopOpen, openStderr := d.openAs(t, alice, "alice-ds", port)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	b := newBrowser(t, chromium, alice)

	d.chapter(t, "Jupyter serves Alice's home at once: Running means the application listens", func(t *testing.T) {
		b.open(t, base+"/tree")
		var who map[string]any
		b.eval(t, `api('GET', '/api/contents/')`, &who)
		if who["type"] != "directory" {
			t.Fatalf("contents of Alice's home: %v", who)
		}
		// The image lists only what it has.
		r := d.as(alice, "open", "alice-ds", "rstudio")
		if r.code == 0 || !strings.Contains(r.stderr, `no application "rstudio"`) || !strings.Contains(r.stderr, "its applications: jupyter") {
			t.Fatalf("open rstudio: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	d.chapter(t, "a Python notebook runs pandas and scikit-learn, and is saved", func(t *testing.T) {
		out := b.notebook(t, "analysis.ipynb", "python3",
			"import pandas, sklearn\nprint('pandas', pandas.__version__, 'sklearn', sklearn.__version__)")
		if !strings.Contains(out, "pandas ") || !strings.Contains(out, "sklearn ") {
			t.Fatalf("python cell printed %q", out)
		}
	})

	d.chapter(t, "an R notebook runs R through the IRkernel", func(t *testing.T) {
		out := b.notebook(t, "r-analysis.ipynb", "ir", "R.version.string")
		if !strings.Contains(out, "R version 4") {
			t.Fatalf("R cell printed %q", out)
		}
	})

	d.chapter(t, "a Jupyter terminal runs as Alice", func(t *testing.T) {
		var out string
		b.eval(t, `terminal('echo "WHO=$(whoami)"; echo END-$((6*7))', 'END-42')`, &out)
		if !strings.Contains(out, "WHO="+alice.name+"\n") {
			t.Fatalf("terminal printed %q, want WHO=%s", out, alice.name)
		}
	})

	d.chapter(t, "Alice makes a venv registered as a kernel and installs an R package into her library", func(t *testing.T) {
		out := b.notebook(t, "setup-envs.ipynb", "python3", setupEnvsCell)
		if !strings.Contains(out, "ENVS-READY") {
			t.Fatalf("setting up the venv and the R package printed %q", out)
		}
		checkEnvs(t, b)
	})

	d.chapter(t, "Carol, a contributor, is refused labvm open and her browser gets nothing from Alice's port", func(t *testing.T) {
		d.must("role", "assign", carol.name, "contributor")
		r := d.as(carol, "open", "alice-ds", "jupyter", "--port", strconv.Itoa(freeLocalPort(t)))
		if r.code == 0 || !strings.Contains(r.stderr, alice.name) {
			t.Fatalf("carol's open: exit %d, stderr %q", r.code, r.stderr)
		}
		cb := newBrowser(t, chromium, carol)
		ctx, cancel := context.WithTimeout(cb.ctx, time.Minute)
		defer cancel()
		err := chromedp.Do(ctx, chromedp.Navigate(base+"/tree"))
		if err == nil || !strings.Contains(err.Error(), "net::ERR_") {
			title, _ := chromedp.Run(ctx, chromedp.Title())
			t.Fatalf("carol's browser at Alice's port: err %v, page title %q; want a network error", err, title)
		}
		// The listener names the refusal on stderr just after closing it.
		for wait := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			msg := openStderr()
			if strings.Contains(msg, "refused a connection") && strings.Contains(msg, carol.name) {
				break
			}
			if time.Now().After(wait) {
				t.Fatalf("Alice's labvm open did not name Carol's refused connection: %q", msg)
			}
		}
		t.Logf("carol's browser: %v", err)
	})

	stopOpen()

	d.chapter(t, "after stop and start, the notebooks, the venv kernel and the R package are still there", func(t *testing.T) {
		d.mustSlow(5*time.Minute, "stop", "alice-ds")
		start := time.Now()
		d.mustSlow(20*time.Minute, "start", "alice-ds")
		t.Logf("start → Running in %s", time.Since(start).Round(time.Second))
		stopAgain, _ := d.openAs(t, alice, "alice-ds", port)
		defer stopAgain()
		b.open(t, base+"/tree")
		var nb struct {
			Content struct {
				Cells []struct {
					Source  string `json:"source"`
					Outputs []any  `json:"outputs"`
				} `json:"cells"`
			} `json:"content"`
		}
		b.eval(t, `api('GET', '/api/contents/analysis.ipynb')`, &nb)
		if len(nb.Content.Cells) != 1 || !strings.Contains(nb.Content.Cells[0].Source, "import pandas, sklearn") || len(nb.Content.Cells[0].Outputs) == 0 {
			t.Fatalf("analysis.ipynb after restart: %+v", nb)
		}
		checkEnvs(t, b)
	})
}

// setupEnvsCell, run in Alice's Python kernel: a venv on top of the
// system's packages with a package of her own (offline: a local source
// tree), registered as the kernel "myenv"; an R package built from a
// local source tree into her R library (R_LIBS_USER).
const setupEnvsCell = `import os, subprocess, textwrap
home = os.path.expanduser('~')
src = os.path.join(home, 'src')
py = os.path.join(src, 'labvmdemo')
os.makedirs(os.path.join(py, 'labvmdemo'), exist_ok=True)
open(os.path.join(py, 'pyproject.toml'), 'w').write(textwrap.dedent('''
    [build-system]
    requires = ["setuptools"]
    build-backend = "setuptools.build_meta"
    [project]
    name = "labvmdemo"
    version = "1.0"
'''))
open(os.path.join(py, 'labvmdemo', '__init__.py'), 'w').write('def hello():\n    return "hello from labvmdemo"\n')
env = os.path.join(home, 'venvs', 'myenv')
def run(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(' '.join(cmd) + ' failed:\n' + r.stdout + r.stderr)
run('python3', '-m', 'venv', '--system-site-packages', env)
run(env + '/bin/pip', 'install', '--no-index', '--no-build-isolation', '--quiet', py)
run(env + '/bin/python', '-m', 'ipykernel', 'install', '--user', '--name', 'myenv', '--display-name', 'Python (myenv)')
r = os.path.join(src, 'labvmhello')
os.makedirs(os.path.join(r, 'R'), exist_ok=True)
open(os.path.join(r, 'DESCRIPTION'), 'w').write('Package: labvmhello\nVersion: 1.0\nTitle: Hello\nDescription: Says hello.\nLicense: MIT\nAuthor: Alice\nMaintainer: Alice <alice@example.org>\n')
open(os.path.join(r, 'NAMESPACE'), 'w').write('export(hello)\n')
open(os.path.join(r, 'R', 'hello.R'), 'w').write('hello <- function() "hello from labvmhello"\n')
run('Rscript', '-e', 'lib <- Sys.getenv("R_LIBS_USER"); dir.create(lib, recursive = TRUE, showWarnings = FALSE); install.packages("' + r + '", repos = NULL, type = "source", lib = lib)')
print('ENVS-READY')
`

// checkEnvs runs Alice's venv kernel and her R package in fresh kernels.
func checkEnvs(t *testing.T, b *browser) {
	t.Helper()
	out := b.notebook(t, "use-myenv.ipynb", "myenv", "import sys, labvmdemo\nprint(sys.prefix, labvmdemo.hello())")
	if !strings.Contains(out, "venvs/myenv") || !strings.Contains(out, "hello from labvmdemo") {
		t.Fatalf("the myenv kernel printed %q", out)
	}
	out = b.notebook(t, "use-rpkg.ipynb", "ir", "library(labvmhello); hello()")
	if !strings.Contains(out, "hello from labvmhello") {
		t.Fatalf("the R package printed %q", out)
	}
}

// mustSlow runs labvm as root like must, with a longer limit: a full
// Debian boot under TCG takes minutes.
func (d *labvmd) mustSlow(limit time.Duration, args ...string) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.labvm, args...)
	cmd.Env = append(os.Environ(), d.cliEnv()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		d.t.Fatalf("labvm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// openAs runs `labvm open NAME jupyter` as u on a fixed local port until
// the returned func interrupts it; stderr returns what it printed there.
func (d *labvmd) openAs(t *testing.T, u unixUser, name string, port int) (stop func(), stderr func() string) {
	t.Helper()
	args := []string{"open", name, "jupyter", "--port", strconv.Itoa(port)}
	cmd := exec.Command("setpriv", append([]string{"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--init-groups", bins.labvm}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LABVM_SOCKET=" + d.socket, "HOME=/nonexistent"}
	return runUntilInterrupted(t, cmd, "jupyter of "+name+" is at http://127.0.0.1:"+strconv.Itoa(port)+"/tree", args)
}

// browser is a headless Chromium run as one Unix user, with a fresh
// profile, driven over the DevTools protocol.
type browser struct {
	ctx context.Context
}

func newBrowser(t *testing.T, chromium string, u unixUser) *browser {
	t.Helper()
	home, err := os.MkdirTemp("/var/tmp", "labvm-e2e-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(home) })
	if err := os.Chown(home, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.Headless,
		chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(filepath.Join(home, "profile")),
		chromedp.Env("HOME=" + home),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			if cmd.SysProcAttr == nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{}
			}
			cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)}
			cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
		}),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium as %s: %v", u.name, err)
	}
	return &browser{ctx: ctx}
}

// open loads url and installs the page helpers (pageJS).
func (b *browser) open(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitReady("body")); err != nil {
		t.Fatalf("load %s: %v", url, err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(title, "Home") && !strings.Contains(title, "Jupyter") {
		t.Fatalf("%s has title %q, not Jupyter's", url, title)
	}
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](pageJS)); err != nil {
		t.Fatalf("install page helpers: %v", err)
	}
}

// eval runs an expression in the page, awaiting a promise, into out.
func (b *browser) eval(t *testing.T, expr string, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 16*time.Minute)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("in the page: %s: %v", expr[:min(len(expr), 80)], err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
	}
}

// notebook makes (or overwrites) notebook path with one code cell, runs it
// in a new session on kernel over the kernel's websocket, saves the cell
// with its outputs, and returns what the cell printed.
func (b *browser) notebook(t *testing.T, path, kernel, code string) string {
	t.Helper()
	args, _ := json.Marshal([]string{path, kernel, code})
	var out string
	b.eval(t, `notebook(...`+string(args)+`)`, &out)
	return out
}

// pageJS is what the browser runs in Jupyter's page: the REST API with
// the page's XSRF cookie, kernels and terminals over websockets, all
// through `labvm open`'s forward.
const pageJS = `
window.xsrf = () => { const m = document.cookie.match(/(?:^|; )_xsrf=([^;]*)/); return m ? m[1] : ''; };
window.api = async (method, path, body) => {
	const r = await fetch(path, {method, headers: {'Content-Type': 'application/json', 'X-XSRFToken': xsrf()},
		body: body === undefined ? undefined : JSON.stringify(body)});
	const text = await r.text();
	if (!r.ok) throw new Error(method + ' ' + path + ': ' + r.status + ' ' + text);
	return text ? JSON.parse(text) : null;
};
window.wsURL = (path) => (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + path;
window.execute = (kernelId, code) => new Promise((resolve, reject) => {
	const session = 'e2e' + Math.random().toString(16).slice(2);
	const ws = new WebSocket(wsURL('/api/kernels/' + kernelId + '/channels?session_id=' + session));
	const msgId = 'm' + Math.random().toString(16).slice(2);
	const outputs = [];
	let text = '';
	const timer = setTimeout(() => { ws.close(); reject(new Error('kernel ' + kernelId + ' did not finish in 15 minutes; so far: ' + text)); }, 900000);
	ws.onerror = () => { clearTimeout(timer); reject(new Error('websocket to kernel ' + kernelId + ' failed')); };
	ws.onopen = () => ws.send(JSON.stringify({
		header: {msg_id: msgId, username: 'e2e', session, msg_type: 'execute_request', version: '5.3', date: new Date().toISOString()},
		parent_header: {}, metadata: {}, channel: 'shell', buffers: [],
		content: {code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false, stop_on_error: true}}));
	ws.onmessage = (ev) => {
		const m = JSON.parse(ev.data);
		if (!m.parent_header || m.parent_header.msg_id !== msgId || m.channel !== 'iopub') return;
		const c = m.content, type = m.header.msg_type;
		if (type === 'stream') { text += c.text; outputs.push({output_type: 'stream', name: c.name, text: c.text}); }
		if (type === 'execute_result' || type === 'display_data') {
			text += (c.data['text/plain'] || '') + '\n';
			const o = {output_type: type, data: c.data, metadata: c.metadata || {}};
			if (type === 'execute_result') o.execution_count = c.execution_count;
			outputs.push(o);
		}
		if (type === 'error') { text += c.ename + ': ' + c.evalue + '\n'; outputs.push({output_type: 'error', ename: c.ename, evalue: c.evalue, traceback: c.traceback}); }
		if (type === 'status' && c.execution_state === 'idle') { clearTimeout(timer); ws.close(); resolve({text, outputs}); }
	};
});
window.notebook = async (path, kernel, code) => {
	const s = await api('POST', '/api/sessions', {path, type: 'notebook', name: path, kernel: {name: kernel}});
	try {
		const r = await execute(s.kernel.id, code);
		await api('PUT', '/api/contents/' + path, {type: 'notebook', format: 'json', content: {
			nbformat: 4, nbformat_minor: 5,
			metadata: {kernelspec: {name: kernel, display_name: kernel, language: kernel === 'ir' ? 'R' : 'python'}},
			cells: [{cell_type: 'code', id: 'c1', metadata: {}, execution_count: 1, source: code, outputs: r.outputs}]}});
		return r.text;
	} finally {
		await api('DELETE', '/api/sessions/' + s.id);
	}
};
window.terminal = async (command, until) => {
	const t = await api('POST', '/api/terminals');
	try {
		return await new Promise((resolve, reject) => {
			const ws = new WebSocket(wsURL('/terminals/websocket/' + t.name));
			let text = '';
			const timer = setTimeout(() => { ws.close(); reject(new Error('terminal printed ' + JSON.stringify(text))); }, 120000);
			ws.onerror = () => { clearTimeout(timer); reject(new Error('websocket to terminal ' + t.name + ' failed')); };
			ws.onopen = () => ws.send(JSON.stringify(['stdin', command + '\r']));
			ws.onmessage = (ev) => {
				const m = JSON.parse(ev.data);
				if (m[0] !== 'stdout') return;
				text += m[1];
				if (text.includes(until)) { clearTimeout(timer); ws.close(); resolve(text.replace(/\r/g, '')); }
			};
		});
	} finally {
		await api('DELETE', '/api/terminals/' + t.name);
	}
};
`
