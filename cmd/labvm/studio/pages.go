package studio

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/storage"
)

//go:embed assets
var assets embed.FS

// css is the stylesheet; error pages carry it inline (an application's
// host cannot serve the page's files: its paths are the application's),
// allowed by its hash in the Content-Security-Policy.
var css, cssHash = func() (template.CSS, string) {
	b, err := assets.ReadFile("assets/studio.css")
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(b)
	return template.CSS(b), base64.StdEncoding.EncodeToString(sum[:])
}()

var tmpl = template.Must(template.New("studio").Funcs(template.FuncMap{
	"when":    when,
	"ago":     ago,
	"bytes":   storage.FormatIEC,
	"memory":  func(mib int) string { return storage.FormatIEC(int64(mib) << 20) },
	"stage":   currentStage,
	"elapsed": elapsed,
	"busy":    func(s api.InstanceState) bool { return transient[s] },
	"seconds": func(n int64) string { return (time.Duration(n) * time.Second).String() },
}).ParseFS(assets, "assets/*.html"))

// transient are the states an operation is moving the instance through.
var transient = map[api.InstanceState]bool{
	api.StateCreating: true, api.StateSettingUp: true, api.StateStopping: true,
	api.StateStarting: true, api.StateRestarting: true, api.StateDeleting: true,
}

// maxForm bounds a form: the daemon takes 1 MiB of JSON, and scripts
// grow when form-encoded.
const maxForm = 4 << 20

func (s *Server) routes() {
	m := http.NewServeMux()
	// Only the script and the stylesheet are files; the templates are not
	// served.
	static, _ := fs.Sub(assets, "assets")
	files := http.StripPrefix("/static/", http.FileServerFS(static))
	m.Handle("GET /static/studio.js", files)
	m.Handle("GET /static/studio.css", files)
	m.HandleFunc("GET /{$}", s.home)
	m.HandleFunc("GET /instances/{name}", s.details)
	m.HandleFunc("GET /fragments/list", s.listFragment)
	m.HandleFunc("GET /fragments/quota", s.quotaFragment)
	m.HandleFunc("GET /fragments/instances/{name}", s.detailsFragment)
	m.HandleFunc("GET /events", s.hub.serveSSE)
	m.HandleFunc("GET /apps/{name}/{app}", s.openApp)
	m.HandleFunc("POST /instances", s.guard(s.create))
	m.HandleFunc("POST /instances/{name}/{action}", s.guard(s.action))
	s.mux = m
}

// guard refuses changes asked from another site (see refuseCrossSite).
func (s *Server) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if why := s.refuseCrossSite(r); why != "" {
			s.notice(w, http.StatusForbidden, notice{Err: &api.Error{Code: api.CodePermissionDenied,
				Message: "labvm studio refused this change: " + why,
				Hint:    "make changes from the page labvm studio printed (http://127.0.0.1:PORT/)"}})
			return
		}
		h(w, r)
	}
}

// asAPIError is err as the daemon would phrase it: its message and hint.
func asAPIError(err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &api.Error{Code: api.CodeUnavailable, Message: "labvmd did not answer in time: " + err.Error(), Hint: "reload the page"}
	}
	return &api.Error{Code: api.CodeInternal, Message: err.Error()}
}

// me is who labvmd says is using the page.
type me struct {
	api.WhoAmI
	Err *api.Error
}

// Owner says whether the user may create instances for others.
func (m me) Owner() bool { return m.Role == api.RoleOwner }

// MayCreate says whether the user's role lets them create instances.
func (m me) MayCreate() bool { return slices.Contains(m.Rights, api.RightWrite) }

// owns says whether the user is inst's own user: the one with its application
// access. labvmd decides; the page only leaves out links that would be
// refused.
func (m me) owns(inst api.Instance) bool { return m.User != "" && inst.Owner == m.User }

// mine is the "mine only" filter: instances the user owns or created.
func (m me) mine(inst api.Instance) bool {
	return m.User != "" && (inst.Owner == m.User || inst.Creator == m.User)
}

func (s *Server) whoami(ctx context.Context) me {
	w, err := s.c.WhoAmI(ctx)
	if err != nil {
		return me{Err: asAPIError(err)}
	}
	return me{WhoAmI: w}
}

// row is one line of the instance list.
type row struct {
	api.Instance
	Mine bool
	// Op is the instance's operation in progress, if the page saw it.
	Op *api.Operation
}

type listData struct {
	Rows []row
	Err  *api.Error
}

func (s *Server) list(ctx context.Context, m me) listData {
	insts, err := s.c.Instances(ctx)
	if err != nil {
		return listData{Err: asAPIError(err)}
	}
	slices.SortFunc(insts, func(a, b api.Instance) int { return strings.Compare(a.Name, b.Name) })
	out := listData{Rows: make([]row, 0, len(insts))}
	for _, inst := range insts {
		out.Rows = append(out.Rows, s.row(m, inst))
	}
	return out
}

func (s *Server) row(m me, inst api.Instance) row {
	return row{Instance: inst, Mine: m.mine(inst), Op: s.hub.runningOp(inst.Name)}
}

type quotaData struct {
	Quota *api.Quota
	Err   *api.Error
}

func (s *Server) quota(ctx context.Context) quotaData {
	q, err := s.c.Quota(ctx)
	if err != nil {
		return quotaData{Err: asAPIError(err)}
	}
	return quotaData{Quota: &q}
}

// createForm is what the create form offers.
type createForm struct {
	// Refused says why the user may not create (their role); the form is
	// then left out.
	Refused string
	Sizes   []api.Size
	Images  []api.Image
	Subnets []subnetChoice
	Keys    []SSHKey
	Owner   bool
	Err     *api.Error
}

type subnetChoice struct{ VNet, Subnet, CIDR string }

func (s *Server) createForm(ctx context.Context, m me) createForm {
	f := createForm{Owner: m.Owner()}
	if m.Err == nil && !m.MayCreate() {
		f.Refused = fmt.Sprintf("Your role (%s) does not let you create instances: an owner can give you one with `labvm role assign %s contributor`.", m.Role, m.User)
		return f
	}
	var err error
	if f.Sizes, err = s.c.Sizes(ctx); err != nil {
		f.Err = asAPIError(err)
	}
	if f.Images, err = s.c.Images(ctx); err != nil && f.Err == nil {
		f.Err = asAPIError(err)
	}
	// Without the reader role the VNets cannot be listed; the default
	// one is used then.
	if vnets, err := s.c.Networks(ctx); err == nil {
		for _, v := range vnets {
			for _, sn := range v.Subnets {
				f.Subnets = append(f.Subnets, subnetChoice{VNet: v.Name, Subnet: sn.Name, CIDR: sn.CIDR})
			}
		}
	}
	if s.cfg.SSHKeys != nil {
		f.Keys = s.cfg.SSHKeys()
	}
	return f
}

// page is the whole page: the list, or one instance's details.
type page struct {
	Token  string
	Me     me
	Mine   bool
	List   listData
	Quota  quotaData
	Create createForm
	Detail *detail
}

func (s *Server) home(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	m := s.whoami(ctx)
	p := page{Token: s.token, Me: m, Mine: r.URL.Query().Get("mine") == "1",
		List: s.list(ctx, m), Quota: s.quota(ctx), Create: s.createForm(ctx, m)}
	s.render(w, http.StatusOK, "page", p)
}

// detail is one instance's page.
type detail struct {
	Name   string
	Inst   *api.Instance
	Err    *api.Error
	Own    bool
	Op     *api.Operation
	Ops    []api.Operation
	OpsErr *api.Error
	Apps   []appLink
	SSH    *sshDetails
}

type appLink struct {
	api.App
	// Href is the studio's link (it redirects to URL); URL is the
	// application's own address on the gateway.
	Href, URL string
}

type sshDetails struct {
	Enabled bool
	Command string
	Config  string
	Err     *api.Error
}

func (s *Server) detail(ctx context.Context, m me, name, host string) *detail {
	d := &detail{Name: name}
	inst, err := s.c.Instance(ctx, name)
	if err != nil {
		d.Err = asAPIError(err)
		return d
	}
	d.Inst = &inst
	d.Own = m.owns(inst)
	d.Op = s.hub.runningOp(name)
	ops, err := s.c.InstanceOperations(ctx, name)
	if err != nil {
		d.OpsErr = asAPIError(err)
	}
	d.Ops = ops
	slices.Reverse(d.Ops)
	if len(d.Ops) > 10 {
		d.Ops = d.Ops[:10]
	}
	if !d.Own {
		return d
	}
	for _, a := range inst.Apps {
		d.Apps = append(d.Apps, appLink{App: a, Href: "/apps/" + name + "/" + a.Name, URL: appURL(host, name, a)})
	}
	d.SSH = &sshDetails{Enabled: inst.SSH, Command: "labvm ssh " + name}
	if inst.SSH && s.cfg.SSHConfig != nil {
		cfg, err := s.cfg.SSHConfig(inst)
		if err != nil {
			d.SSH.Err = asAPIError(err)
		}
		d.SSH.Config = cfg
	}
	return d
}

// appURL is the application's address on the gateway, on the port the
// page was reached on.
func appURL(host, name string, a api.App) string {
	port := ""
	if _, p, err := net.SplitHostPort(host); err == nil {
		port = ":" + p
	}
	return "http://" + appHost(name, a.Name) + port + a.Path
}

func (s *Server) details(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	m := s.whoami(ctx)
	d := s.detail(ctx, m, r.PathValue("name"), r.Host)
	status := http.StatusOK
	if d.Err != nil {
		status = d.Err.Code.HTTPStatus()
	}
	s.render(w, status, "page", page{Token: s.token, Me: m, Quota: s.quota(ctx), Detail: d})
}

func (s *Server) listFragment(w http.ResponseWriter, r *http.Request) {
	m := s.whoami(r.Context())
	s.render(w, http.StatusOK, "rows", s.list(r.Context(), m))
}

func (s *Server) quotaFragment(w http.ResponseWriter, r *http.Request) {
	s.render(w, http.StatusOK, "quota", s.quota(r.Context()))
}

func (s *Server) detailsFragment(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	d := s.detail(ctx, s.whoami(ctx), r.PathValue("name"), r.Host)
	s.render(w, http.StatusOK, "detail", page{Token: s.token, Detail: d})
}

// openApp sends the browser to the application's address on the
// gateway; whether it may go there is labvmd's to say, at the gateway.
func (s *Server) openApp(w http.ResponseWriter, r *http.Request) {
	name, appName := r.PathValue("name"), r.PathValue("app")
	inst, err := s.c.Instance(r.Context(), name)
	if err != nil {
		s.errorPage(w, r, err)
		return
	}
	for _, a := range inst.Apps {
		if a.Name == appName {
			http.Redirect(w, r, appURL(r.Host, name, a), http.StatusSeeOther)
			return
		}
	}
	names := make([]string, 0, len(inst.Apps))
	for _, a := range inst.Apps {
		names = append(names, a.Name)
	}
	s.errorPage(w, r, &api.Error{Code: api.CodeNotFound,
		Message: fmt.Sprintf("%s's image %s has no application %q", name, inst.Image, appName),
		Hint:    "its applications: " + strings.Join(names, ", ")})
}

// notice is the answer to a change: what was started, or why not.
type notice struct {
	Text string
	Op   *api.Operation
	Err  *api.Error
}

func (s *Server) notice(w http.ResponseWriter, status int, n notice) {
	s.render(w, status, "notice", n)
}

func (s *Server) noticeErr(w http.ResponseWriter, err error) {
	ae := asAPIError(err)
	s.notice(w, ae.Code.HTTPStatus(), notice{Err: ae})
}

// errorPage is a page of its own saying why, with the daemon's message
// and hint, and the way back to the page.
func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, err error) {
	ae := asAPIError(err)
	back := "/"
	if _, port, err := net.SplitHostPort(r.Host); err == nil && classifyHost(r.Host).kind != hostStudio {
		back = "http://127.0.0.1:" + port + "/"
	}
	s.render(w, ae.Code.HTTPStatus(), "error", errorPage{Err: ae, CSS: css, Back: back})
}

type errorPage struct {
	Err  *api.Error
	CSS  template.CSS
	Back string
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	f := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	req := api.CreateInstanceRequest{
		Name: f("name"), Size: f("size"), Image: f("image"), DiskSize: f("disk_size"),
		SSHPublicKey: f("ssh_key_text"), AssignTo: f("assign_to"),
		SetupScript: r.PostFormValue("setup_script"), StartupScript: r.PostFormValue("startup_script"),
	}
	if req.SSHPublicKey == "" {
		req.SSHPublicKey = f("ssh_key")
	}
	if vs := f("subnet"); vs != "" {
		req.VNet, req.Subnet, _ = strings.Cut(vs, "/")
	}
	// Browsers send textarea lines ending in CRLF; the guest's shell
	// would read the CR as part of each command.
	req.SetupScript = strings.ReplaceAll(req.SetupScript, "\r\n", "\n")
	req.StartupScript = strings.ReplaceAll(req.StartupScript, "\r\n", "\n")
	op, err := s.c.CreateInstance(r.Context(), req)
	if err != nil {
		s.noticeErr(w, err)
		return
	}
	s.hub.saw(op)
	s.notice(w, http.StatusAccepted, notice{Text: "Creating " + req.Name, Op: &op})
}

func (s *Server) action(w http.ResponseWriter, r *http.Request) {
	name, action := r.PathValue("name"), r.PathValue("action")
	ctx := r.Context()
	var (
		op   api.Operation
		err  error
		verb string
	)
	switch action {
	case "start":
		op, err = s.c.Start(ctx, name)
		verb = "Starting"
	case "stop":
		op, err = s.c.Stop(ctx, name)
		verb = "Stopping"
	case "restart":
		op, err = s.c.Restart(ctx, name)
		verb = "Restarting"
	case "delete":
		// The page asks for the name typed again; a stray click or a
		// replayed form cannot delete a disk.
		if got := strings.TrimSpace(r.PostFormValue("confirm")); got != name {
			s.notice(w, http.StatusBadRequest, notice{Err: &api.Error{Code: api.CodeInvalidArgument,
				Message: fmt.Sprintf("not deleted: type the instance's name (%s) to confirm deleting it and its disk", name)}})
			return
		}
		op, err = s.c.Delete(ctx, name)
		verb = "Deleting"
	default:
		s.notice(w, http.StatusNotFound, notice{Err: &api.Error{Code: api.CodeNotFound,
			Message: fmt.Sprintf("no action %q: use start, stop, restart or delete", action)}})
		return
	}
	if err != nil {
		s.noticeErr(w, err)
		return
	}
	s.hub.saw(op)
	s.notice(w, http.StatusAccepted, notice{Text: verb + " " + name, Op: &op})
}

// render executes a template into a buffer first, so a failure is an
// error page rather than half a page.
func (s *Server) render(w http.ResponseWriter, status int, name string, data any) {
	var b bytes.Buffer
	if err := tmpl.ExecuteTemplate(&b, name, data); err != nil {
		s.cfg.Logf("render %s: %v", name, err)
		http.Error(w, "labvm studio: cannot render the page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// Only this page's own files run; no other site may frame it.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'sha256-"+cssHash+"'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	if _, err := w.Write(b.Bytes()); err != nil {
		s.cfg.Logf("write %s: %v", name, err)
	}
}

// when is a time for people: the date and how long ago.
func when(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC") + " (" + ago(t) + ")"
}

func ago(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < -time.Minute: // a schedule's next time
		d = -d
		if d < time.Hour {
			return fmt.Sprintf("in %d min", int(d.Minutes()))
		}
		if d < 48*time.Hour {
			return fmt.Sprintf("in %d h", int(d.Hours()))
		}
		return fmt.Sprintf("in %d days", int(d.Hours()/24))
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

func elapsed(st api.Stage) string {
	end := time.Now()
	if st.DoneAt != nil {
		end = *st.DoneAt
	}
	return end.Sub(st.StartedAt).Round(100 * time.Millisecond).String()
}

// currentStage is the stage an operation is in, or its last.
func currentStage(op *api.Operation) string {
	if op == nil || len(op.Stages) == 0 {
		return ""
	}
	st := op.Stages[len(op.Stages)-1]
	if st.Detail != "" {
		return st.Name + ": " + st.Detail
	}
	return st.Name
}
