package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/vm"
	"github.com/labvm/labvm/vm/guest"
)

// copyStepTimeout bounds each guest command of a copy (probe, rename,
// unpack): unpacking a large tree under TCG takes a while.
const copyStepTimeout = 30 * time.Minute

// copyDialTimeout bounds waiting for the guest end of a copy to listen:
// starting python3 under TCG takes seconds.
const copyDialTimeout = 60 * time.Second

// copyBuffer is the size of the one buffer each copy moves bytes with.
const copyBuffer = 1 << 20

// copyCtx is the session a copy runs in.
type copyCtx struct {
	e    *Engine
	inst vm.Instance
	user string
}

func (e *Engine) copySession(inst vm.Instance) (*copyCtx, error) {
	if err := CheckAccess(inst); err != nil {
		return nil, err
	}
	if !inst.IP.IsValid() || !inst.Gateway.Is4() {
		return nil, fmt.Errorf("copy with %s: no address or gateway recorded for it", inst.Name)
	}
	user := inst.GuestUser
	if user == "" {
		user = guestUser(inst.Owner(), inst.Owner() == "root")
	}
	return &copyCtx{e: e, inst: inst, user: user}, nil
}

// startCopy opens a copy with inst (access checked) and resolves path in
// the guest, with base looked up inside it.
func (e *Engine) startCopy(ctx context.Context, inst vm.Instance, path, base string) (*copyCtx, guest.GuestPath, guest.Probe, error) {
	c, err := e.copySession(inst)
	if err != nil {
		return nil, guest.GuestPath{}, guest.Probe{}, err
	}
	gp, err := guest.ParseGuestPath(path)
	if err != nil {
		return nil, gp, guest.Probe{}, errdefs.Invalidf("%v", err)
	}
	pr, err := c.probe(ctx, gp, base)
	if err != nil {
		return nil, gp, pr, err
	}
	return c, gp, pr, nil
}

// run runs a guest command of the copy and fails unless it exits 0.
func (c *copyCtx) run(ctx context.Context, what string, req vm.ExecRequest) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, copyStepTimeout)
	defer cancel()
	res, err := c.e.hv.Exec(ctx, c.inst.Domain, req)
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %w", what, c.inst.Name, err)
	}
	if res.ExitCode != 0 || res.Signal != 0 {
		msg := strings.TrimSpace(string(res.Stderr))
		if guest.DiskFull(res.Stderr) {
			return nil, diskFull(c.inst.Name, what+": "+msg)
		}
		return nil, fmt.Errorf("%s in %s failed (exit %d): %s", what, c.inst.Name, res.ExitCode, clip(msg))
	}
	return res.Stdout, nil
}

func diskFull(name, detail string) error {
	return errdefs.New(errdefs.ErrInsufficientResources,
		fmt.Sprintf("free space in the guest (`labvm exec %s -- df -h`) and copy again; nothing was left behind", name),
		"the guest's disk is full: %s", clip(detail))
}

func clip(s string) string {
	if len(s) > 400 {
		return s[:400] + "…"
	}
	return s
}

// cleanup removes leftovers, even when the caller's context is gone.
func (c *copyCtx) cleanup(paths ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.run(ctx, "remove "+strings.Join(paths, " "), guest.RemoveRequest(paths...)); err != nil {
		c.e.log.Warn("a failed copy left files in the guest", "instance", c.inst.Name, "paths", paths, "error", err)
	}
}

// probe resolves p in the guest, with base looked up inside it.
func (c *copyCtx) probe(ctx context.Context, p guest.GuestPath, base string) (guest.Probe, error) {
	out, err := c.run(ctx, "look up the path", guest.ProbeRequest(c.user, p, base))
	if err != nil {
		return guest.Probe{}, err
	}
	pr, err := guest.ParseProbe(out)
	if errors.Is(err, guest.ErrNoGuestUser) {
		return pr, errdefs.New(errdefs.ErrConflict,
			"instances made before `labvm cp` have their user only if they were created with --ssh-key; create a new instance to copy files",
			"%s has no account %q in the guest to copy as", c.inst.Name, c.user)
	}
	return pr, err
}

func token() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// CopyIn writes what body carries into the instance: one file, or a
// directory as a tar stream (req.Kind). Bytes go straight from body to the
// guest end of the copy over one connection, under a temporary name in the
// target's directory that is renamed only once everything arrived; a
// failure removes it.
func (e *Engine) CopyIn(ctx context.Context, inst vm.Instance, req api.CopyInRequest, body io.Reader) (api.CopyResult, error) {
	var res api.CopyResult
	c, gp, pr, err := e.startCopy(ctx, inst, req.Path, req.Name)
	if err != nil {
		return res, err
	}
	target, mkdir, err := copyInTarget(inst.Name, gp, pr, req)
	if err != nil {
		return res, err
	}
	res.Path = target
	if mkdir != "" {
		if _, err := c.run(ctx, "make the directory "+mkdir, guest.MkdirRequest(mkdir, pr.UID, pr.GID)); err != nil {
			return res, err
		}
	}
	var leftovers []string
	fail := func(err error) (api.CopyResult, error) {
		if mkdir != "" {
			leftovers = append(leftovers, mkdir)
		}
		if len(leftovers) > 0 {
			c.cleanup(leftovers...)
		}
		return res, err
	}
	dir := path.Dir(target)
	if req.Kind == api.CopyFile {
		tmp := guest.TempName(dir, token(), ".part")
		leftovers = append(leftovers, tmp)
		g, err := c.openStream(ctx, guest.StreamWrite, tmp)
		if err != nil {
			return fail(err)
		}
		res.Bytes, err = g.send(body)
		if err != nil {
			return fail(err)
		}
		if _, err := c.run(ctx, "put "+target+" in place", guest.FinishFileRequest(tmp, target, pr.UID, pr.GID, req.Mode)); err != nil {
			return fail(err)
		}
		return res, nil
	}
	stage := guest.TempName(dir, token(), ".d")
	if _, err := c.run(ctx, "make "+stage, guest.MkdirPrivateRequest(stage)); err != nil {
		return fail(err)
	}
	leftovers = append(leftovers, stage)
	pr2, pw := io.Pipe()
	filtered := make(chan error, 1)
	var content int64
	go func() {
		n, err := guest.FilterTar(pw, body)
		content = n
		pw.CloseWithError(err)
		filtered <- err
	}()
	g, err := c.openStream(ctx, guest.StreamUnpack, stage)
	if err == nil {
		_, err = g.send(pr2)
	}
	pr2.CloseWithError(errors.New("copy ended"))
	ferr := <-filtered
	res.Bytes = content
	if ferr != nil && errors.Is(ferr, guest.ErrUnsafeTar) {
		return fail(errdefs.Invalidf("%v", ferr))
	}
	if err != nil {
		return fail(err)
	}
	if ferr != nil {
		return fail(errdefs.Invalidf("the directory's archive: %v", ferr))
	}
	if _, err := c.run(ctx, "put "+target+" in place", guest.FinishTreeRequest(stage, target, pr.UID, pr.GID, req.Mode)); err != nil {
		return fail(err)
	}
	return res, nil
}

// copyInTarget decides where a copy in lands, and which directory (if
// any) to make first, from what the probe saw.
func copyInTarget(name string, gp guest.GuestPath, pr guest.Probe, req api.CopyInRequest) (target, mkdir string, err error) {
	shown := name + ":" + pr.Path
	into := func() (string, string, error) {
		if req.Name == "" {
			return "", "", errdefs.Invalidf("%s is a directory: name the file to write from standard input, e.g. %s/FILE", shown, shown)
		}
		t := path.Join(pr.Path, req.Name)
		switch {
		case req.Kind == api.CopyFile && pr.ChildType == guest.TypeDir:
			return "", "", errdefs.New(errdefs.ErrConflict, "remove it first, or copy to another name", "%s:%s is a directory; a file cannot replace it", name, t)
		case req.Kind == api.CopyFile && pr.ChildType == guest.TypeOther:
			return "", "", errdefs.New(errdefs.ErrConflict, "", "%s:%s is not a regular file", name, t)
		case req.Kind == api.CopyDir && pr.ChildType != guest.TypeMissing:
			return "", "", errdefs.New(errdefs.ErrAlreadyExists, "directory copies never merge: remove it first, or copy into another directory", "%s:%s already exists", name, t)
		}
		return t, "", nil
	}
	switch pr.Type {
	case guest.TypeDir:
		return into()
	case guest.TypeOther:
		return "", "", errdefs.New(errdefs.ErrConflict, "", "%s is not a regular file or directory", shown)
	case guest.TypeFile:
		if gp.Dir {
			return "", "", errdefs.New(errdefs.ErrConflict, "", "%s is a file, not a directory", shown)
		}
		if req.Kind == api.CopyDir {
			return "", "", errdefs.New(errdefs.ErrAlreadyExists, "remove it first, or copy into another directory", "%s already exists and is a file", shown)
		}
		return pr.Path, "", nil
	}
	// Missing: its directory must be there.
	if pr.ParentType != guest.TypeDir {
		return "", "", errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("make it first: labvm exec %s -- mkdir -p %s", name, path.Dir(pr.Path)),
			"%s: no such directory %s in the guest", shown, path.Dir(pr.Path))
	}
	if gp.Dir {
		t, _, err := into()
		return t, pr.Path, err
	}
	return pr.Path, "", nil
}

// guestEnd is the guest end of a copy, connected: the process that
// listened (running guest.StreamRequest) and the connection it took.
type guestEnd struct {
	c    *copyCtx
	p    string
	conn *net.TCPConn
	done chan guestEndResult
	stop context.CancelFunc
}

type guestEndResult struct {
	res vm.ExecResult
	err error
}

// openStream starts the guest end of a copy (mode on p) and connects to
// it. The guest end listens on a random port and takes only a connection
// that first sends this copy's token; the daemon reaches it with its
// marked dialer, as it does for tunnels.
func (c *copyCtx) openStream(ctx context.Context, mode guest.StreamMode, p string) (*guestEnd, error) {
	// A port some guest service holds makes the guest end fail to bind;
	// another random port will do.
	for attempt := 1; ; attempt++ {
		g, err := c.tryStream(ctx, mode, p)
		if err == nil || !errors.Is(err, errPortTaken) || attempt == 3 {
			return g, err
		}
		c.e.log.Info("the guest end of a copy found its port taken; trying another", "instance", c.inst.Name, "error", err)
	}
}

var errPortTaken = errors.New("the port is taken in the guest")

func (c *copyCtx) tryStream(ctx context.Context, mode guest.StreamMode, p string) (*guestEnd, error) {
	tok := token() + token()
	port := 40000 + int(randUint16()%20000)
	// The guest end accepts only the host's address on the instance's
	// bridge: dialling from the gateway, rather than letting the route
	// pick, makes that the address it sees.
	host := c.inst.Gateway
	execCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	g := &guestEnd{c: c, p: p, done: make(chan guestEndResult, 1), stop: stop}
	go func() {
		res, err := c.e.hv.Exec(execCtx, c.inst.Domain, guest.StreamRequest(mode, port, p, tok, host))
		g.done <- guestEndResult{res, err}
	}()
	addr := net.JoinHostPort(c.inst.IP.String(), strconv.Itoa(port))
	dialer := guestDialer()
	dialer.LocalAddr = &net.TCPAddr{IP: host.AsSlice()}
	deadline := time.Now().Add(copyDialTimeout)
	for {
		dctx, cancel := context.WithTimeout(ctx, guestDialTimeout)
		conn, err := dialer.DialContext(dctx, "tcp", addr)
		cancel()
		if err == nil {
			if err = handshake(conn, tok); err == nil {
				g.conn = conn.(*net.TCPConn)
				return g, nil
			}
			// A guest end that took a connection from elsewhere
			// first listens again (busybox nc); keep dialling while
			// it runs.
			_ = conn.Close()
			err = fmt.Errorf("the guest end did not answer on %s: %w", addr, err)
		}
		select {
		case end := <-g.done:
			g.done <- end
			return nil, g.verdict(fmt.Errorf("the guest end exited before it took the copy: %w", err))
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, errdefs.New(errdefs.ErrUnavailable, "", "copy with %s: cannot reach the guest end of the copy on %s: %v", c.inst.Name, addr, err)
		}
	}
}

// handshake sends the copy's token and reads the guest end's answer, a
// line of its own, so a service that happened to hold the port is never
// taken for it.
func handshake(conn net.Conn, tok string) error {
	_ = conn.SetDeadline(time.Now().Add(copyDialTimeout))
	_, err := io.WriteString(conn, tok+"\n")
	if err == nil {
		err = readAck(conn)
	}
	_ = conn.SetDeadline(time.Time{})
	return err
}

// readAck reads the guest end's answer to the token, byte by byte so
// nothing behind it is consumed.
func readAck(r io.Reader) error {
	var line []byte
	b := make([]byte, 1)
	for len(line) <= len(guest.StreamAck) {
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	if string(line) != guest.StreamAck {
		return fmt.Errorf("unexpected answer %.40q", line)
	}
	return nil
}

// send copies r to the guest end and waits until it has everything.
func (g *guestEnd) send(r io.Reader) (int64, error) {
	n, err := io.CopyBuffer(g.conn, r, make([]byte, copyBuffer))
	if err == nil {
		err = g.conn.CloseWrite()
	}
	if err == nil {
		// The guest end closes once everything is written.
		_, _ = io.Copy(io.Discard, io.LimitReader(g.conn, 4096))
	}
	// Closed before waiting for the guest end: on a failure (the client
	// left) it sees the end of its input and exits.
	_ = g.conn.Close()
	return n, g.verdict(err)
}

// receive copies what the guest end sends to w.
func (g *guestEnd) receive(w io.Writer) (int64, error) {
	n, err := io.CopyBuffer(w, g.conn, make([]byte, copyBuffer))
	// Closed before waiting: a guest end still sending (the client left)
	// gets an error and exits.
	_ = g.conn.Close()
	return n, g.verdict(err)
}

// verdict waits for the guest end to exit and says how the copy went:
// its failure (with a full disk told apart) before moved, the error of
// moving the bytes.
func (g *guestEnd) verdict(moved error) error {
	defer g.stop()
	name := g.c.inst.Name
	var end guestEndResult
	select {
	case end = <-g.done:
	case <-time.After(copyDialTimeout):
		if moved == nil {
			moved = errors.New("no exit status")
		}
		return fmt.Errorf("copy with %s: the guest end did not finish: %w", name, moved)
	}
	if end.err != nil {
		return fmt.Errorf("copy with %s: %w", name, end.err)
	}
	if end.res.ExitCode != 0 || end.res.Signal != 0 {
		msg := strings.TrimSpace(string(end.res.Stderr))
		switch {
		case guest.DiskFull(end.res.Stderr):
			return diskFull(name, g.p)
		case strings.Contains(msg, "Address already in use") || strings.Contains(msg, "Address in use"):
			return fmt.Errorf("copy with %s: %w: %s", name, errPortTaken, clip(lastLine(msg)))
		case end.res.ExitCode == 127:
			return errdefs.New(errdefs.ErrUnavailable, "cloud images have python3; install it in the guest", "copy with %s: %s", name, clip(msg))
		}
		return fmt.Errorf("copy with %s failed in the guest (exit %d): %s", name, end.res.ExitCode, clip(lastLine(msg)))
	}
	if moved != nil {
		return fmt.Errorf("copy with %s: %w", name, moved)
	}
	// Connections it refused: someone in the guest or a peer went for
	// the copy's port.
	var refused []string
	for _, l := range strings.Split(string(end.res.Stderr), "\n") {
		if strings.HasPrefix(l, guest.StreamRefusedPrefix) {
			refused = append(refused, l)
		}
	}
	if len(refused) > 0 {
		g.c.e.log.Info("the guest end of a copy refused connections before the daemon's", "instance", name,
			"refused", len(refused), "last", clip(refused[len(refused)-1]))
	}
	return nil
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func randUint16() uint16 {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return uint16(b[0])<<8 | uint16(b[1])
}

// CopyOut sends a guest file, or with recursive a directory as a tar
// stream, to the writer start returns once the source is known to be
// there (so a refusal is still a plain error answer). A directory is
// packed into a temporary archive in the guest first and removed after.
func (e *Engine) CopyOut(ctx context.Context, inst vm.Instance, req api.CopyOutRequest, start func(api.CopyOutInfo) io.Writer) (api.CopyResult, error) {
	var res api.CopyResult
	c, gp, pr, err := e.startCopy(ctx, inst, req.Path, "")
	if err != nil {
		return res, err
	}
	res.Path = pr.Path
	shown := inst.Name + ":" + pr.Path
	switch pr.Type {
	case guest.TypeMissing:
		return res, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("`labvm exec %s -- ls -la %s` shows what is there", inst.Name, path.Dir(pr.Path)), "%s: no such file or directory", shown)
	case guest.TypeOther:
		return res, errdefs.New(errdefs.ErrConflict, "", "%s is not a regular file or directory", shown)
	case guest.TypeDir:
		if !req.Recursive {
			return res, errdefs.New(errdefs.ErrInvalidArgument, "copy directories with -r", "%s is a directory", shown)
		}
	case guest.TypeFile:
		if gp.Dir {
			return res, errdefs.New(errdefs.ErrConflict, "", "%s is a file, not a directory", shown)
		}
		g, err := c.openStream(ctx, guest.StreamRead, pr.Path)
		if err != nil {
			return res, err
		}
		res.Bytes, err = g.receive(start(api.CopyOutInfo{Kind: api.CopyFile, Path: pr.Path, Mode: pr.Mode, Size: pr.Size}))
		return res, err
	}
	g, err := c.openStream(ctx, guest.StreamPack, pr.Path)
	if err != nil {
		return res, err
	}
	res.Bytes, err = g.receive(start(api.CopyOutInfo{Kind: api.CopyDir, Path: pr.Path, Mode: pr.Mode, Size: -1}))
	return res, err
}
