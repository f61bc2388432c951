// Package client is the Go client of labvmd's API. The CLI and the
// end-to-end tests use it; it rebuilds the typed *api.Error of every
// failed call so callers can branch on codes and print hints.
package client

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

// DefaultSocket is where labvmd listens unless told otherwise.
const DefaultSocket = "/run/labvm/labvm.sock"

// Client talks to one labvmd: on this host over its socket, or on
// another through ssh (NewSSH).
type Client struct {
	// target names the daemon in messages: its socket, or the ssh URL.
	target string
	// dial opens one connection to the daemon; every HTTP connection and
	// every tunnel is one call.
	dial func(ctx context.Context) (net.Conn, error)
	// remote is set for a daemon reached through ssh.
	remote *SSHTarget
	http   *http.Client
}

// New returns a client of the daemon listening on socket.
func New(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	return newClient(socket, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	})
}

func newClient(target string, dial func(ctx context.Context) (net.Conn, error)) *Client {
	tr := &http.Transport{
		DialContext:  func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		MaxIdleConns: 4,
		// Uploads ask before sending (Expect: 100-continue), so a refusal
		// (no right, name taken) comes back before gigabytes go out.
		ExpectContinueTimeout: 30 * time.Second,
	}
	return &Client{target: target, dial: dial, http: &http.Client{Transport: tr}}
}

// Target names the daemon this client reaches: its socket path, or the
// ssh URL (with the far socket, when one was given).
func (c *Client) Target() string { return c.target }

// Remote is the ssh target of a client made by NewSSH, nil for a local
// socket.
func (c *Client) Remote() *SSHTarget { return c.remote }

// Close ends the client's idle connections: for a remote daemon, the ssh
// processes that carry them.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// DialError is dialError for a connection the caller dialled itself to
// this client's socket (labvm dial-stdio).
func (c *Client) DialError(err error) error { return c.dialError(err) }

// dialError turns a failed dial into advice: whether the daemon runs, and
// how to get access to it.
func (c *Client) dialError(err error) error {
	if e := c.remoteError(err); e != nil {
		return e
	}
	switch {
	case errors.Is(err, syscall.ENOENT):
		return &api.Error{Code: api.CodeUnavailable,
			Message: fmt.Sprintf("labvmd is not running: no socket at %s", c.target),
			Hint:    "start it with `sudo systemctl start labvmd` (or `sudo labvmd &`); use --socket or LABVM_SOCKET for another daemon"}
	case errors.Is(err, syscall.ECONNREFUSED):
		return &api.Error{Code: api.CodeUnavailable,
			Message: fmt.Sprintf("labvmd is not running: %s refuses connections (stale socket)", c.target),
			Hint:    "start it with `sudo systemctl start labvmd` (or `sudo labvmd &`)"}
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return &api.Error{Code: api.CodePermissionDenied,
			Message: fmt.Sprintf("permission denied on %s", c.target),
			Hint:    "add yourself to the labvm group (`sudo usermod -aG labvm $USER`) and log in again"}
	}
	return &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("cannot reach labvmd at %s: %v", c.target, err)}
}

func (c *Client) request(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://labvmd"+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.send(ctx, req)
}

// send makes the request and rebuilds the daemon's error, if any.
func (c *Client) send(ctx context.Context, req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return nil, c.dialError(err)
		}
		if e := c.remoteError(err); e != nil {
			return nil, e
		}
		return nil, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("labvmd at %s: %v", c.target, err)}
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		var er api.ErrorResponse
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(raw, &er) != nil || er.Error == nil {
			return nil, &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("labvmd answered %s: %s", resp.Status, bytes.TrimSpace(raw))}
		}
		return nil, er.Error
	}
	return resp, nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.request(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode response of %s %s: %w", method, path, err)
	}
	return nil
}

// upload streams size bytes (-1: unknown) of body as the request's body
// and decodes the JSON answer into out; what names the call in a decode
// error. It asks for 100-continue: the daemon checks the request before
// it reads a byte, so a refused upload costs no transfer.
func (c *Client) upload(ctx context.Context, method, path, contentType string, body io.Reader, size int64, what string, out any) error {
	hreq, err := http.NewRequestWithContext(ctx, method, "http://labvmd"+path, io.NopCloser(body))
	if err != nil {
		return err
	}
	hreq.ContentLength = size
	if size == 0 {
		hreq.Body = http.NoBody
	}
	hreq.Header.Set("Content-Type", contentType)
	hreq.Header.Set("Expect", "100-continue")
	resp, err := c.send(ctx, hreq)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode response of %s: %w", what, err)
	}
	return nil
}

func esc(s string) string { return url.PathEscape(s) }

// Info describes the daemon and who it thinks you are.
func (c *Client) Info(ctx context.Context) (api.Info, error) {
	var out api.Info
	return out, c.do(ctx, http.MethodGet, "/v1/info", nil, &out)
}

// Sizes lists the size catalogue.
func (c *Client) Sizes(ctx context.Context) ([]api.Size, error) {
	var out []api.Size
	return out, c.do(ctx, http.MethodGet, "/v1/sizes", nil, &out)
}

// Images lists the image catalogue.
func (c *Client) Images(ctx context.Context) ([]api.Image, error) {
	var out []api.Image
	return out, c.do(ctx, http.MethodGet, "/v1/images", nil, &out)
}

// Image shows one image.
func (c *Client) Image(ctx context.Context, name string) (api.Image, error) {
	var out api.Image
	return out, c.do(ctx, http.MethodGet, "/v1/images/"+esc(name), nil, &out)
}

// ImportImage streams size bytes of an image from body to the daemon,
// which stores it under req.Name. It returns once the daemon has received
// everything, with the operation that checks and stores it. Open the file
// as the user (never as root on someone's behalf): the daemon stores what
// it is sent and reads no path itself.
func (c *Client) ImportImage(ctx context.Context, req api.ImportImageRequest, body io.Reader, size int64) (api.Operation, error) {
	var out api.Operation
	if size <= 0 {
		return out, &api.Error{Code: api.CodeInvalidArgument, Message: fmt.Sprintf("image of %d bytes: nothing to import", size)}
	}
	return out, c.upload(ctx, http.MethodPost, "/v1/images?"+req.Query().Encode(), api.ImportContentType, body, size, "image import", &out)
}

// ImportImageFile opens path with this process's own rights and streams
// it with ImportImage. Only regular files are sent.
func (c *Client) ImportImageFile(ctx context.Context, req api.ImportImageRequest, path string) (api.Operation, error) {
	f, err := os.Open(path)
	if err != nil {
		return api.Operation{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return api.Operation{}, err
	}
	if !st.Mode().IsRegular() {
		return api.Operation{}, fmt.Errorf("%s is not a regular file", path)
	}
	return c.ImportImage(ctx, req, f, st.Size())
}

// DeleteImage deletes an image that no instance uses.
func (c *Client) DeleteImage(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/images/"+esc(name), nil, nil)
}

// Instances lists all instances.
func (c *Client) Instances(ctx context.Context) ([]api.Instance, error) {
	return c.InstancesFiltered(ctx, ListOptions{})
}

// Instance shows one instance.
func (c *Client) Instance(ctx context.Context, name string) (api.Instance, error) {
	var out api.Instance
	return out, c.do(ctx, http.MethodGet, "/v1/instances/"+esc(name), nil, &out)
}

// CreateInstance starts creating an instance.
func (c *Client) CreateInstance(ctx context.Context, req api.CreateInstanceRequest) (api.Operation, error) {
	var out api.Operation
	return out, c.do(ctx, http.MethodPost, "/v1/instances", req, &out)
}

// Start, Stop, Restart and Delete start the lifecycle operation.
func (c *Client) Start(ctx context.Context, name string) (api.Operation, error) {
	return c.action(ctx, http.MethodPost, name, "/start")
}

func (c *Client) Stop(ctx context.Context, name string) (api.Operation, error) {
	return c.action(ctx, http.MethodPost, name, "/stop")
}

func (c *Client) Restart(ctx context.Context, name string) (api.Operation, error) {
	return c.action(ctx, http.MethodPost, name, "/restart")
}

func (c *Client) Delete(ctx context.Context, name string) (api.Operation, error) {
	return c.action(ctx, http.MethodDelete, name, "")
}

func (c *Client) action(ctx context.Context, method, name, suffix string) (api.Operation, error) {
	var out api.Operation
	return out, c.do(ctx, method, "/v1/instances/"+esc(name)+suffix, nil, &out)
}

// Exec runs a command in the guest and returns its result.
func (c *Client) Exec(ctx context.Context, name string, req api.ExecRequest) (api.ExecResult, error) {
	var out api.ExecResult
	return out, c.do(ctx, http.MethodPost, "/v1/instances/"+esc(name)+"/exec", req, &out)
}

// Operations lists recent operations.
func (c *Client) Operations(ctx context.Context) ([]api.Operation, error) {
	var out []api.Operation
	return out, c.do(ctx, http.MethodGet, "/v1/operations", nil, &out)
}

// InstanceOperations lists one instance's operations, oldest first: what
// its own user may see without the reader role that Operations needs.
func (c *Client) InstanceOperations(ctx context.Context, name string) ([]api.Operation, error) {
	var out []api.Operation
	return out, c.do(ctx, http.MethodGet, "/v1/instances/"+esc(name)+"/operations", nil, &out)
}

// Operation shows one operation.
func (c *Client) Operation(ctx context.Context, id string) (api.Operation, error) {
	var out api.Operation
	return out, c.do(ctx, http.MethodGet, "/v1/operations/"+esc(id), nil, &out)
}

// Wait follows an operation until it is done, calling progress with every
// change, and returns its final state. A failed operation returns its
// error as an *api.Error.
func (c *Client) Wait(ctx context.Context, id string, progress func(api.Operation)) (api.Operation, error) {
	resp, err := c.request(ctx, http.MethodGet, "/v1/operations/"+esc(id)+"/wait", nil)
	if err != nil {
		return api.Operation{}, err
	}
	defer resp.Body.Close()
	var last api.Operation
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var op api.Operation
		if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
			return last, fmt.Errorf("decode operation update: %w", err)
		}
		last = op
		if progress != nil {
			progress(op)
		}
		if op.Status.Done() {
			if op.Status == api.OperationFailed && op.Error != nil {
				return op, op.Error
			}
			return op, nil
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return last, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("lost labvmd while waiting for operation %s: %v", id, err), Hint: "`labvm wait " + id + "` resumes waiting"}
	}
	if ctx.Err() != nil {
		return last, ctx.Err()
	}
	return last, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("labvmd closed the stream of operation %s before it finished", id), Hint: "`labvm wait " + id + "` resumes waiting"}
}

// WhoAmI tells who the daemon thinks the caller is, and their rights.
func (c *Client) WhoAmI(ctx context.Context) (api.WhoAmI, error) {
	var out api.WhoAmI
	return out, c.do(ctx, http.MethodGet, "/v1/whoami", nil, &out)
}

// Roles lists role assignments.
func (c *Client) Roles(ctx context.Context) ([]api.RoleAssignment, error) {
	var out []api.RoleAssignment
	return out, c.do(ctx, http.MethodGet, "/v1/roles", nil, &out)
}

// AssignRole gives principal ("alice" or "@group") a role.
func (c *Client) AssignRole(ctx context.Context, principal, role string) (api.RoleAssignment, error) {
	var out api.RoleAssignment
	return out, c.do(ctx, http.MethodPost, "/v1/roles", api.RoleAssignment{Principal: principal, Role: role}, &out)
}

// RemoveRole takes a role away.
func (c *Client) RemoveRole(ctx context.Context, principal, role string) error {
	return c.do(ctx, http.MethodDelete, "/v1/roles/"+esc(principal)+"/"+esc(role), nil, nil)
}

// Quota shows core use and limits.
func (c *Client) Quota(ctx context.Context) (api.Quota, error) {
	var out api.Quota
	return out, c.do(ctx, http.MethodGet, "/v1/quota", nil, &out)
}

// SetQuota sets a family's limit, or the total when family is "".
func (c *Client) SetQuota(ctx context.Context, family string, limit int) (api.Quota, error) {
	var out api.Quota
	return out, c.do(ctx, http.MethodPut, "/v1/quota", api.SetQuotaRequest{Family: family, Limit: limit}, &out)
}

// AuditQuery selects audit entries.
type AuditQuery struct {
	Since    string // a duration, e.g. "1h"
	Instance string
	Caller   string
	Limit    int
}

// Audit lists audit entries, oldest first.
func (c *Client) Audit(ctx context.Context, q AuditQuery) ([]api.AuditEntry, error) {
	v := url.Values{}
	if q.Since != "" {
		v.Set("since", q.Since)
	}
	if q.Instance != "" {
		v.Set("instance", q.Instance)
	}
	if q.Caller != "" {
		v.Set("caller", q.Caller)
	}
	if q.Limit > 0 {
		v.Set("limit", fmt.Sprint(q.Limit))
	}
	var out []api.AuditEntry
	return out, c.do(ctx, http.MethodGet, "/v1/audit?"+v.Encode(), nil, &out)
}

// ListOptions filter instances.
type ListOptions struct {
	Mine  bool
	Owner string
}

// InstancesFiltered lists instances by owner.
func (c *Client) InstancesFiltered(ctx context.Context, o ListOptions) ([]api.Instance, error) {
	var out []api.Instance
	return out, c.do(ctx, http.MethodGet, "/v1/instances?"+o.query("").Encode(), nil, &out)
}

// InstanceSummaries lists instances by owner in the summary view: what
// `labvm list` shows, a fraction of the full view's bytes.
func (c *Client) InstanceSummaries(ctx context.Context, o ListOptions) ([]api.InstanceSummary, error) {
	path := "/v1/instances?" + o.query(api.ViewSummary).Encode()
	raw, err := c.raw(ctx, path)
	if err != nil {
		return nil, err
	}
	out, err := decodeSummaries(raw)
	if err != nil {
		return nil, fmt.Errorf("decode response of GET %s: %w", path, err)
	}
	return out, nil
}

// InstancesJSON is InstancesFiltered's JSON array as the daemon sent it,
// undecoded, for callers that only pass it on (`labvm list -o json`).
func (c *Client) InstancesJSON(ctx context.Context, o ListOptions) ([]byte, error) {
	return c.raw(ctx, "/v1/instances?"+o.query("").Encode())
}

// raw is the body of a GET, whole.
func (c *Client) raw(ctx context.Context, path string) ([]byte, error) {
	resp, err := c.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read response of GET %s: %w", path, err)
	}
	return raw, nil
}

func (o ListOptions) query(view string) url.Values {
	v := url.Values{}
	if view != "" {
		v.Set("view", view)
	}
	if o.Mine {
		v.Set("mine", "1")
	}
	if o.Owner != "" {
		v.Set("owner", o.Owner)
	}
	return v
}

// UpdateInstance asks for a change; sizes never change, so today this
// only ever explains that.
func (c *Client) UpdateInstance(ctx context.Context, name string, req api.UpdateInstanceRequest) (api.Instance, error) {
	var out api.Instance
	return out, c.do(ctx, http.MethodPatch, "/v1/instances/"+esc(name), req, &out)
}

// Logs returns an instance's console log (kind "console" or "") or a
// script's output ("setup", "startup").
func (c *Client) Logs(ctx context.Context, name, kind string) (api.Logs, error) {
	var out api.Logs
	return out, c.do(ctx, http.MethodGet, "/v1/instances/"+esc(name)+"/logs?kind="+url.QueryEscape(kind), nil, &out)
}

// HostShutdown stops every running instance cleanly because the host is
// going down; they start again at the next daemon start.
func (c *Client) HostShutdown(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/host/shutdown", nil, nil)
}

// Events follows every operation change the caller may see until ctx
// ends, calling fn for each.
func (c *Client) Events(ctx context.Context, fn func(api.Operation)) error {
	return c.FollowEvents(ctx, nil, fn)
}

// FollowEvents is Events that also calls opened (when not nil) once
// labvmd has accepted the stream: every change after that reaches fn.
// A follower that lost the stream knows from it when to fetch again
// what it missed.
func (c *Client) FollowEvents(ctx context.Context, opened func(), fn func(api.Operation)) error {
	return c.follow(ctx, "/v1/events", opened, func(ev api.Event) {
		if ev.Operation != nil {
			fn(*ev.Operation)
		}
	})
}

// FollowChanges is FollowEvents with instance state changes too
// (GET /v1/events?instances=1): fn gets each line as an api.Event with
// one of its fields set.
func (c *Client) FollowChanges(ctx context.Context, opened func(), fn func(api.Event)) error {
	return c.follow(ctx, "/v1/events?instances=1", opened, fn)
}

func (c *Client) follow(ctx context.Context, path string, opened func(), fn func(api.Event)) error {
	resp, err := c.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if opened != nil {
		opened()
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var kind struct {
			Event string `json:"event"`
		}
		if err := json.Unmarshal(sc.Bytes(), &kind); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		var ev api.Event
		switch kind.Event {
		case "":
			ev.Operation = new(api.Operation)
			err = json.Unmarshal(sc.Bytes(), ev.Operation)
		case api.EventInstance:
			ev.Instance = new(api.InstanceEvent)
			err = json.Unmarshal(sc.Bytes(), ev.Instance)
		default:
			continue // a kind of event this client does not know
		}
		if err != nil {
			return fmt.Errorf("decode %s event: %w", cmp.Or(kind.Event, "operation"), err)
		}
		fn(ev)
	}
	if ctx.Err() != nil {
		return nil
	}
	return &api.Error{Code: api.CodeUnavailable, Message: "labvmd closed the event stream", Hint: "is labvmd still running? run `labvm events` again"}
}

// ClusterHosts lists the hosts of this daemon's cluster.
func (c *Client) ClusterHosts(ctx context.Context) ([]api.ClusterHost, error) {
	var out []api.ClusterHost
	return out, c.do(ctx, http.MethodGet, "/v1/cluster/hosts", nil, &out)
}

// ClusterInstances lists every instance of this daemon's cluster.
func (c *Client) ClusterInstances(ctx context.Context) ([]api.ClusterInstance, error) {
	var out []api.ClusterInstance
	return out, c.do(ctx, http.MethodGet, "/v1/cluster/instances", nil, &out)
}

// ClusterQuota is the quota of this daemon's cluster.
func (c *Client) ClusterQuota(ctx context.Context) (api.Quota, error) {
	var out api.Quota
	return out, c.do(ctx, http.MethodGet, "/v1/cluster/quota", nil, &out)
}

// SetClusterQuota sets a core limit of this daemon's cluster (family ""
// for the total; 0 removes it).
func (c *Client) SetClusterQuota(ctx context.Context, family string, limit int) (api.Quota, error) {
	var out api.Quota
	return out, c.do(ctx, http.MethodPut, "/v1/cluster/quota", api.SetQuotaRequest{Family: family, Limit: limit}, &out)
}

// Placement asks this daemon's cluster which host a create of size from
// image goes to. A daemon in no cluster answers NotFound.
func (c *Client) Placement(ctx context.Context, size, image string) (api.Placement, error) {
	var out api.Placement
	q := url.Values{"size": {size}, "image": {image}}
	return out, c.do(ctx, http.MethodGet, "/v1/cluster/placement?"+q.Encode(), nil, &out)
}
