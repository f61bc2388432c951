package e2e

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestForwardServesOnlyItsUser: Ann forwards a port of her instance to
// 127.0.0.1. Ben, another user of the host, finds the port and connects:
// he gets nothing, and Ann's labvm says who was refused. Ann gets through.
func TestForwardServesOnlyItsUser(t *testing.T) {
	image := requireHost(t)
	binariesReadableByAll(t)
	p := "lvl" + randHex(3)
	testGroup(t, p)
	ann := testUser(t, p+"-ann", p)
	ben := testUser(t, p+"-ben", p)
	d := startDaemon(t, "--socket-group", p)
	d.must("image", "import", "tiny", image, "--sha256", readSHA256(t, image))
	d.must("role", "assign", ann.name, "contributor")

	t.Log("Ann creates an instance and serves a page in it")
	mustAs(t, d, ann, "create", "ann-dev", "--image", "tiny", "--size", "Standard_B1s")
	mustAs(t, d, ann, "exec", "ann-dev", "--", "sh", "-c", "mkdir -p /tmp/www && echo hello > /tmp/www/index.html && busybox httpd -p 8888 -h /tmp/www")

	t.Log("Ann forwards it to a local port")
	port := strconv.Itoa(freeLocalPort(t))
	args := []string{"forward", "ann-dev", port + ":8888"}
	cmd := exec.Command("setpriv", append([]string{"--reuid=" + strconv.Itoa(ann.uid), "--regid=" + strconv.Itoa(ann.gid), "--init-groups", bins.labvm}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LABVM_SOCKET=" + d.socket, "HOME=/nonexistent"}
	stop, annStderr := runUntilInterrupted(t, cmd, "Forwarding 127.0.0.1:"+port, args)

	t.Log("Ben connects to Ann's port and gets nothing")
	if got := httpGetAs(t, ben, port); got != "" {
		t.Fatalf("Ben got %q through Ann's forward, want nothing", got)
	}
	want := "refused a connection from 127.0.0.1:"
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(annStderr(), want) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if s := annStderr(); !strings.Contains(s, want) || !strings.Contains(s, "user "+ben.name+" (uid "+strconv.Itoa(ben.uid)+")") {
		t.Fatalf("Ann's labvm forward did not report refusing %s (uid %d); stderr:\n%s", ben.name, ben.uid, s)
	}

	t.Log("Ann connects and gets the page")
	if got := httpGetAs(t, ann, port); !strings.Contains(got, "\r\n\r\nhello\n") {
		t.Fatalf("Ann got %q through her forward, want the page", got)
	}
	stop()
}

// mustAs runs labvm as u and fails the test unless it exits 0.
func mustAs(t *testing.T, d *labvmd, u unixUser, args ...string) string {
	t.Helper()
	r := d.as(u, args...)
	if r.code != 0 {
		t.Fatalf("labvm %s as %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), u.name, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// httpGetAs sends GET / to 127.0.0.1:port from a process of u (bash's
// /dev/tcp, no client to install) and returns the raw answer, "" when
// the connection is closed without one.
func httpGetAs(t *testing.T, u unixUser, port string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A refused connection is closed under the writer: ignore SIGPIPE.
	script := `trap '' PIPE
exec 3<>/dev/tcp/127.0.0.1/` + port + ` || exit 3
printf 'GET / HTTP/1.0\r\n\r\n' >&3 2>/dev/null
cat <&3 2>/dev/null
exit 0`
	cmd := exec.CommandContext(ctx, "setpriv", "--reuid="+strconv.Itoa(u.uid), "--regid="+strconv.Itoa(u.gid), "--init-groups", "/bin/bash", "-c", script)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("connect to 127.0.0.1:%s as %s: %v", port, u.name, err)
	}
	return string(out)
}
