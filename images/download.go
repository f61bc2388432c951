package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	// partialDir holds downloads in progress, apart from the bases so that
	// nothing in Dir proper is ever incomplete. Root-only: its contents are
	// unverified.
	partialDir  = ".partial"
	partialMode = 0o700
	// downloadChunk is the read size; each read reports progress and
	// re-arms the stall timer.
	downloadChunk = 256 << 10
)

// errStalled ends an attempt that received nothing for StallTimeout.
var errStalled = errors.New("no data received")

// partial is one URL's download area: data (the bytes so far) and meta
// (what identifies the version they belong to). Both are named by the
// sha256 of the URL, so the same URL always finds its earlier bytes.
type partial struct {
	data, meta string
}

// partialMeta is stored next to the data so a resume can ask the server,
// through If-Range, for the rest of the same version only.
type partialMeta struct {
	URL string `json:"url"`
	// Validator is a strong ETag or else the Last-Modified date; empty
	// when the server gave neither.
	Validator string `json:"validator,omitempty"`
}

func (c *Catalogue) openPartial(u *url.URL) (partial, error) {
	if err := c.ensureDir(); err != nil {
		return partial{}, err
	}
	dir := filepath.Join(c.Dir, partialDir)
	if err := os.MkdirAll(dir, partialMode); err != nil {
		return partial{}, fmt.Errorf("create partial download directory: %w", err)
	}
	sum := sha256.Sum256([]byte(u.String()))
	key := hex.EncodeToString(sum[:])
	return partial{data: filepath.Join(dir, key), meta: filepath.Join(dir, key+".json")}, nil
}

// remove forgets a download. Failing to is not worth failing a pull for:
// the next pull of the URL overwrites or resumes it anyway.
func (p partial) remove() {
	_ = os.Remove(p.data)
	_ = os.Remove(p.meta)
}

func (p partial) readMeta(u *url.URL) partialMeta {
	var m partialMeta
	b, err := os.ReadFile(p.meta)
	if err != nil || json.Unmarshal(b, &m) != nil || m.URL != u.String() {
		return partialMeta{}
	}
	return m
}

// writeMeta replaces the metadata atomically: a torn file would read as
// "no validator" and silently lose the protection of If-Range.
func (p partial) writeMeta(m partialMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := p.meta + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write download metadata: %w", err)
	}
	if err := os.Rename(tmp, p.meta); err != nil {
		return fmt.Errorf("write download metadata: %w", err)
	}
	return nil
}

// transientError marks a failure another attempt may not repeat: the
// network, a 5xx, a stalled transfer.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func transient(err error) error { return &transientError{err: err} }

// download fills part.data with the resource at u, resuming what is there,
// retrying transient failures with a doubling pause. Failures that outlast
// the attempts are ErrDownloadFailed; refusals are ErrRemoteRefused at once.
// mayResumeBlind allows resuming without a validator, which is safe only
// when a checksum will catch a splice of two versions.
func (p *Puller) download(ctx context.Context, part partial, u *url.URL, mayResumeBlind bool, report func(got, total int64)) error {
	pause := p.retryWait()
	for attempt := 1; ; attempt++ {
		err := p.attempt(ctx, part, u, mayResumeBlind, report)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var te *transientError
		if !errors.As(err, &te) {
			return err
		}
		if attempt >= p.attempts() {
			return fmt.Errorf("%w after %d attempts: %w", ErrDownloadFailed, attempt, err)
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		pause = min(pause*2, maxRetryWait)
	}
}

// attempt makes one request, appending to part.data when the server
// resumes (206) and starting over when it sends the whole file (200):
// either because it ignores Range or because If-Range found a new version.
func (p *Puller) attempt(ctx context.Context, part partial, u *url.URL, mayResumeBlind bool, report func(got, total int64)) error {
	file, err := os.OpenFile(part.data, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open partial download: %w", err)
	}
	defer file.Close() // what was written is made durable by the checked Sync below
	st, err := file.Stat()
	if err != nil {
		return fmt.Errorf("stat partial download: %w", err)
	}
	offset := st.Size()
	meta := part.readMeta(u)
	if meta.Validator == "" && !mayResumeBlind {
		offset = 0
	}

	// The attempt has its own context so that a stall, noticed by a timer
	// re-armed on every read, can abort a body read that would otherwise
	// block for as long as the server keeps the connection open.
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(p.stallTimeout(), func() { cancel(errStalled) })
	defer stall.Stop()

	req, err := http.NewRequestWithContext(actx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		if meta.Validator != "" {
			req.Header.Set("If-Range", meta.Validator)
		}
	}
	resp, err := p.client().Do(req)
	if err != nil {
		err = redactErr(err)
		if errors.Is(err, ErrForbiddenAddress) || errors.Is(err, ErrRemoteRefused) {
			return err // the same next time
		}
		return transient(attemptErr(actx, err))
	}
	defer resp.Body.Close()

	total := int64(-1)
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			// Not the bytes we asked for: start clean next time rather than
			// splice at the wrong place. Should truncating fail, the
			// next attempt's Range is answered wrongly again and retried.
			_ = file.Truncate(0)
			return transient(fmt.Errorf("server resumed with %q, not at byte %d", resp.Header.Get("Content-Range"), offset))
		}
		total = size
	case http.StatusOK:
		offset = 0
		if err := file.Truncate(0); err != nil {
			return fmt.Errorf("restart partial download: %w", err)
		}
		if err := part.writeMeta(partialMeta{URL: u.String(), Validator: validator(resp.Header)}); err != nil {
			return err
		}
		total = resp.ContentLength
	case http.StatusRequestedRangeNotSatisfiable:
		// Asking for the bytes after the last one: the earlier attempt
		// already had everything, it just never got to say so.
		if _, size, ok := parseContentRange(resp.Header.Get("Content-Range")); ok && offset > 0 && size == offset {
			report(offset, size)
			return nil
		}
		_ = file.Truncate(0) // as above: a failure shows up again on the next attempt
		return transient(fmt.Errorf("server cannot resume at byte %d (%s)", offset, resp.Status))
	default:
		return statusError(resp)
	}

	if _, err := file.Seek(offset, io.SeekStart); err != nil {
		return fmt.Errorf("seek partial download: %w", err)
	}
	got := offset
	report(got, total)
	buf := make([]byte, downloadChunk)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			stall.Reset(p.stallTimeout())
			if _, err := file.Write(buf[:n]); err != nil {
				return fmt.Errorf("write partial download: %w", err)
			}
			got += int64(n)
			report(got, total)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return transient(fmt.Errorf("connection lost after %d bytes: %w", got, attemptErr(actx, rerr)))
		}
	}
	if total >= 0 && got != total {
		return transient(fmt.Errorf("connection lost after %d of %d bytes", got, total))
	}
	// A restart over a longer earlier attempt must not keep its tail.
	if err := file.Truncate(got); err != nil {
		return fmt.Errorf("trim partial download: %w", err)
	}
	if err := file.Sync(); err != nil {
		return fmt.Errorf("sync partial download: %w", err)
	}
	return nil
}

// attemptErr names a stall as such instead of as a bare cancellation.
func attemptErr(actx context.Context, err error) error {
	if cause := context.Cause(actx); errors.Is(cause, errStalled) {
		return fmt.Errorf("%w for the stall timeout", errStalled)
	}
	return err
}

// statusError turns an unexpected status into an error naming it. Client
// errors are final; server errors, timeouts and rate limits are worth
// another attempt.
func statusError(resp *http.Response) error {
	err := fmt.Errorf("HTTP %s", resp.Status)
	switch {
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return transient(err)
	}
	// 4xx, and a 3xx the client could not follow, say the same next time.
	return fmt.Errorf("%w: %w", ErrRemoteRefused, err)
}

// validator picks what If-Range may carry: a strong ETag, else the
// Last-Modified date. Weak ETags are not allowed in If-Range (RFC 9110).
func validator(h http.Header) string {
	if etag := h.Get("ETag"); etag != "" && !strings.HasPrefix(etag, "W/") {
		return etag
	}
	return h.Get("Last-Modified")
}

// parseContentRange reads "bytes START-END/SIZE" (SIZE may be "*") and
// "bytes */SIZE" (from a 416), returning START (-1 if absent) and SIZE
// (-1 if unknown).
func parseContentRange(v string) (start, size int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, sz, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	size = -1
	if sz != "*" {
		n, err := strconv.ParseInt(sz, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, false
		}
		size = n
	}
	if rng == "*" {
		return -1, size, true
	}
	first, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false
	}
	return start, size, true
}

// fetchSmall GETs a small document (a checksums file) in one attempt,
// reading at most limit bytes.
func (p *Puller) fetchSmall(ctx context.Context, u *url.URL, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, p.stallTimeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	resp, err := p.client().Do(req)
	if err != nil {
		err = redactErr(err)
		if errors.Is(err, ErrForbiddenAddress) || errors.Is(err, ErrRemoteRefused) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrDownloadFailed, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		err := statusError(resp)
		var te *transientError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%w: %w", ErrDownloadFailed, err)
		}
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read: %w", ErrDownloadFailed, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: over %d bytes; is it really a checksums file?", ErrRemoteRefused, limit)
	}
	return b, nil
}
