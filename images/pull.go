package images

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"
)

var (
	// ErrInvalidURL means a pull was given something other than an http or
	// https URL; nothing was fetched.
	ErrInvalidURL = errors.New("invalid image URL")
	// ErrRemoteRefused means the server answered a client error (404, 403,
	// …): retrying the same URL cannot help.
	ErrRemoteRefused = errors.New("server refused the download")
	// ErrDownloadFailed means the server or the network kept failing for
	// every attempt; what arrived is kept, so pulling again resumes.
	ErrDownloadFailed = errors.New("download failed")
	// ErrChecksumNotListed means the checksums file has no sha256 for the
	// image's file name.
	ErrChecksumNotListed = errors.New("checksum not listed")
)

// Defaults for a zero Puller.
const (
	defaultAttempts     = 5
	defaultRetryWait    = time.Second
	maxRetryWait        = 30 * time.Second
	defaultStallTimeout = time.Minute
)

// PullOptions describes one image to fetch over HTTP(S).
type PullOptions struct {
	// URL is where the image is; only http and https are accepted.
	URL string
	// SHA256 is the expected hex digest of the file at URL; empty skips
	// the check unless ChecksumsURL is set.
	SHA256 string
	// ChecksumsURL names a SHA256SUMS file in which the digest of URL's
	// base name is looked up. It excludes SHA256.
	ChecksumsURL string
	// Progress, if set, is called as bytes arrive with the bytes held so
	// far (including any resumed from an earlier attempt) and the total,
	// or -1 when the server did not say. Calls are never concurrent, and
	// none comes after Pull returns; keep it quick, it runs on the
	// download's goroutine.
	Progress func(done, total int64)
	// Downloaded, if set, is called once the whole file is here, before it
	// is checked and stored, which can take a while for large images.
	Downloaded func()
}

// Puller fetches images for a Catalogue and shares downloads: pulls of the
// same URL at the same time make one request stream, and every caller gets
// its progress and result. Its zero value is ready to use.
type Puller struct {
	// AllowLoopback lets pulls connect to loopback and to this host's own
	// addresses, which are otherwise refused (ErrForbiddenAddress) along
	// with link-local, unspecified and multicast ones. Only for tests that
	// serve images from httptest; nothing in the API can set it.
	AllowLoopback bool
	// Attempts bounds the requests made for one download, the first
	// included; 0 means 5.
	Attempts int
	// RetryWait is the pause before the second attempt, doubled for each
	// later one up to 30 s; 0 means 1 s.
	RetryWait time.Duration
	// StallTimeout ends an attempt that receives nothing for that long;
	// 0 means one minute.
	StallTimeout time.Duration

	clientOnce sync.Once
	httpClient *http.Client

	mu      sync.Mutex
	flights map[string]*flight
}

// client is built on first use, with the destination guard AllowLoopback
// asks for, and kept so connections are reused.
func (p *Puller) client() *http.Client {
	p.clientOnce.Do(func() { p.httpClient = newGuardedClient(p.AllowLoopback) })
	return p.httpClient
}

func (p *Puller) attempts() int {
	if p.Attempts > 0 {
		return p.Attempts
	}
	return defaultAttempts
}

func (p *Puller) retryWait() time.Duration {
	if p.RetryWait > 0 {
		return p.RetryWait
	}
	return defaultRetryWait
}

func (p *Puller) stallTimeout() time.Duration {
	if p.StallTimeout > 0 {
		return p.StallTimeout
	}
	return defaultStallTimeout
}

// CheckPullOptions validates what can be known without the network, so
// the daemon can refuse bad input before starting an operation.
func CheckPullOptions(opts PullOptions) error {
	_, _, err := checkPull(opts)
	return err
}

// checkPull returns the parsed URL and the normalised expected digest
// ("" when none is given or it is to be looked up).
func checkPull(opts PullOptions) (u *url.URL, want string, err error) {
	if u, err = parseImageURL(opts.URL); err != nil {
		return nil, "", err
	}
	if opts.SHA256 != "" && opts.ChecksumsURL != "" {
		return nil, "", fmt.Errorf("%w: give either a sha256 or a checksums URL, not both", ErrInvalidDigest)
	}
	if opts.SHA256 != "" {
		if want, err = normaliseDigest(opts.SHA256); err != nil {
			return nil, "", fmt.Errorf("expected checksum: %w", err)
		}
	}
	if opts.ChecksumsURL != "" {
		if _, err := parseImageURL(opts.ChecksumsURL); err != nil {
			return nil, "", fmt.Errorf("checksums: %w", err)
		}
	}
	return u, want, nil
}

// parseImageURL accepts absolute http and https URLs with a host. Anything
// else (file://, ftp://, a bare path) would either fail obscurely in the
// HTTP client or read the daemon's own files.
func parseImageURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s does not parse: %v", ErrInvalidURL, RedactURL(raw), redactErr(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%w: %q: only http:// and https:// URLs can be pulled", ErrInvalidURL, RedactURL(raw))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w: %q has no host", ErrInvalidURL, RedactURL(raw))
	}
	return u, nil
}

// Pull downloads opts.URL, verifies it, and stores it exactly as Import
// does, returning the same Imported. Partial downloads live in
// Dir/.partial, never among the bases: an interrupted or cancelled pull
// keeps what arrived there and the next pull of the same URL resumes it;
// success, a checksum mismatch or a file that cannot be an image removes
// it. Dir itself gains nothing but a complete base.
func (c *Catalogue) Pull(ctx context.Context, opts PullOptions) (Imported, error) {
	imp, err := c.pull(ctx, opts)
	if err != nil {
		return Imported{}, fmt.Errorf("pull %s: %w", RedactURL(opts.URL), err)
	}
	return imp, nil
}

func (c *Catalogue) pull(ctx context.Context, opts PullOptions) (Imported, error) {
	u, want, err := checkPull(opts)
	if err != nil {
		return Imported{}, err
	}
	if opts.ChecksumsURL != "" {
		if want, err = c.Puller.lookupChecksum(ctx, opts.ChecksumsURL, u); err != nil {
			return Imported{}, err
		}
	}
	w := watcher{progress: opts.Progress, downloaded: opts.Downloaded}
	key := u.String()
	for {
		f, leader := c.Puller.join(key, want)
		if leader {
			stop := f.watch(w)
			imp, err := c.fetch(ctx, u, want, f)
			stop()
			c.Puller.land(key, f, imp, err)
			return imp, err
		}
		imp, retry, err := f.wait(ctx, w, want)
		if !retry {
			return imp, err
		}
	}
}

// flight is one download in progress, shared by every pull of its URL.
type flight struct {
	// want is the digest the flight verifies against (its leader's).
	want string
	// done is closed once imp and err are set.
	done chan struct{}
	imp  Imported
	err  error

	// mu guards the watchers and the last progress, and serialises the
	// calls to watchers, so each sees its events in order and none after
	// it stopped watching.
	mu         sync.Mutex
	watchers   map[int]watcher
	nextID     int
	got, total int64
	downloaded bool
}

type watcher struct {
	progress   func(done, total int64)
	downloaded func()
}

// join returns the flight for key, starting one (leader true) if none is
// in progress. The leader must land it.
func (p *Puller) join(key, want string) (f *flight, leader bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f := p.flights[key]; f != nil {
		return f, false
	}
	if p.flights == nil {
		p.flights = map[string]*flight{}
	}
	f = &flight{want: want, done: make(chan struct{}), watchers: map[int]watcher{}, total: -1}
	p.flights[key] = f
	return f, true
}

// land publishes a flight's outcome. The flight leaves the map first, so a
// pull arriving afterwards starts afresh instead of joining a finished one.
func (p *Puller) land(key string, f *flight, imp Imported, err error) {
	p.mu.Lock()
	delete(p.flights, key)
	p.mu.Unlock()
	f.imp, f.err = imp, err
	close(f.done)
}

// watch subscribes w to f's events, replaying where it is so a late
// joiner's progress does not start from nothing. The returned func
// unsubscribes.
func (f *flight) watch(w watcher) (stop func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.nextID
	f.nextID++
	f.watchers[id] = w
	if f.got > 0 && w.progress != nil {
		w.progress(f.got, f.total)
	}
	if f.downloaded && w.downloaded != nil {
		w.downloaded()
	}
	return func() {
		f.mu.Lock()
		delete(f.watchers, id)
		f.mu.Unlock()
	}
}

func (f *flight) progress(got, total int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got, f.total = got, total
	for _, w := range f.watchers {
		if w.progress != nil {
			w.progress(got, total)
		}
	}
}

func (f *flight) markDownloaded() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.downloaded = true
	for _, w := range f.watchers {
		if w.downloaded != nil {
			w.downloaded()
		}
	}
}

// wait follows a flight another pull leads until it lands or ctx ends.
// retry is true when the outcome belongs to the leader rather than to this
// caller: the leader was cancelled (this caller then resumes the download
// itself), or its different expected checksum failed.
func (f *flight) wait(ctx context.Context, w watcher, want string) (imp Imported, retry bool, err error) {
	stop := f.watch(w)
	defer stop()
	select {
	case <-f.done:
	case <-ctx.Done():
		return Imported{}, false, ctx.Err()
	}
	switch {
	case f.err == nil:
		if want != "" && want != f.imp.SourceDigest {
			return Imported{}, false, fmt.Errorf("%w: expected sha256 %s, the download has %s", ErrChecksumMismatch, want, f.imp.SourceDigest)
		}
		return f.imp, false, nil
	case isCancel(f.err):
		return Imported{}, true, nil
	case want != f.want && errors.Is(f.err, ErrChecksumMismatch):
		return Imported{}, true, nil
	}
	return Imported{}, false, f.err
}

func isCancel(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// fetch is a leader's work: download into the partial area, then import.
// The partial file stays only when a later pull can usefully resume it.
func (c *Catalogue) fetch(ctx context.Context, u *url.URL, want string, f *flight) (Imported, error) {
	part, err := c.openPartial(u)
	if err != nil {
		return Imported{}, err
	}
	if err := c.Puller.download(ctx, part, u, want != "", f.progress); err != nil {
		if !isCancel(err) && !errors.Is(err, ErrDownloadFailed) {
			part.remove()
		}
		return Imported{}, err
	}
	f.markDownloaded()
	imp, err := c.importPartial(ctx, part, want)
	if err != nil && isCancel(err) {
		return Imported{}, err
	}
	part.remove()
	return imp, err
}

// importPartial imports a finished download. The partial file is root's,
// in a root-only directory, but it goes through the same reader path as an
// upload so there is one way into the catalogue.
func (c *Catalogue) importPartial(ctx context.Context, part partial, want string) (Imported, error) {
	f, err := os.Open(part.data)
	if err != nil {
		return Imported{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Imported{}, err
	}
	return c.Import(ctx, f, ImportOptions{SHA256: want, Size: st.Size()})
}
