// Package errdefs owns the daemon's failure kinds and the one table that
// turns any error into the API's error code. Engines return errors of a
// kind (ErrInvalidArgument, ErrConflict, …) or the domain packages'
// sentinels; nothing but ToAPI builds a wire error, so every handler and
// every operation reports failures the same way.
//
// It knows the wire codes and the domain packages' sentinels, and nothing
// of HTTP handlers or engines.
package errdefs

import (
	"context"
	"errors"
	"fmt"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/images"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/storage/dataset"
	"github.com/labvm/labvm/vm"
)

// The kinds of failure. Match them with errors.Is.
var (
	ErrInvalidArgument       = errors.New("invalid argument")
	ErrNotFound              = errors.New("not found")
	ErrAlreadyExists         = errors.New("already exists")
	ErrConflict              = errors.New("conflict")
	ErrPermissionDenied      = errors.New("permission denied")
	ErrQuotaExceeded         = errors.New("quota exceeded")
	ErrUnavailable           = errors.New("unavailable")
	ErrInsufficientResources = errors.New("insufficient resources")
	ErrTooLarge              = errors.New("request too large")
	ErrTooManyRequests       = errors.New("too many requests")
	ErrCancelled             = errors.New("cancelled")
)

// Error is a failure of one kind with a message and, where there is
// something to do about it, a hint.
type Error struct {
	Kind error
	Msg  string
	Hint string
	// Err is the cause, if any; its kind does not override Kind.
	Err error
}

func (e *Error) Error() string { return e.Msg }

// Is makes errors.Is(err, Kind) true.
func (e *Error) Is(target error) bool { return target == e.Kind }

func (e *Error) Unwrap() error { return e.Err }

// New returns an error of kind with a hint and a formatted message.
func New(kind error, hint, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...), Hint: hint}
}

// Invalidf is bad input found by the daemon itself.
func Invalidf(format string, args ...any) error {
	return &Error{Kind: ErrInvalidArgument, Msg: fmt.Sprintf(format, args...)}
}

// WithHint keeps err (its message and kind) and attaches what to do.
func WithHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &hinted{err: err, hint: hint}
}

type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() }
func (h *hinted) Unwrap() error { return h.err }

// errInternal is the kind of a recorded failure whose code is Internal (or
// one this table does not know); it maps to CodeInternal like any error
// without a kind.
var errInternal = errors.New("internal error")

// Recorded is the failure an operation recorded, rebuilt as an error of the
// kind its code names, with its message and hint: ToAPI gives back the
// same wire error. nil for an operation that did not fail.
func Recorded(rec *store.OperationError) error {
	if rec == nil {
		return nil
	}
	kind := errInternal
	for _, c := range codes {
		if string(c.code) == rec.Code {
			kind = c.kind
			break
		}
	}
	return New(kind, rec.Hint, "%s", rec.Message)
}

// codes maps the kinds to wire codes.
var codes = []struct {
	kind error
	code api.Code
}{
	{ErrInvalidArgument, api.CodeInvalidArgument},
	{ErrNotFound, api.CodeNotFound},
	{ErrAlreadyExists, api.CodeAlreadyExists},
	{ErrConflict, api.CodeConflict},
	{ErrPermissionDenied, api.CodePermissionDenied},
	{ErrQuotaExceeded, api.CodeQuotaExceeded},
	{ErrUnavailable, api.CodeUnavailable},
	{ErrInsufficientResources, api.CodeInsufficientResources},
	{ErrTooLarge, api.CodeTooLarge},
	{ErrTooManyRequests, api.CodeTooManyRequests},
	{ErrCancelled, api.CodeCancelled},
}

// sentinels maps the domain packages' sentinel errors to a code, with the
// hint that fits every occurrence. First match wins.
var sentinels = []struct {
	err  error
	code api.Code
	hint string
}{
	{store.ErrNotFound, api.CodeNotFound, ""},
	{store.ErrExists, api.CodeAlreadyExists, "pick another name, or delete the existing one first"},
	{vm.ErrIllegalTransition, api.CodeConflict, ""},
	{vm.ErrInvalidName, api.CodeInvalidArgument, ""},
	{vm.ErrUnknownSize, api.CodeInvalidArgument, "run `labvm sizes` to see the sizes"},
	{storage.ErrInvalidSeed, api.CodeInvalidArgument, ""},
	{images.ErrChecksumMismatch, api.CodeInvalidArgument, "check the file and the --sha256 value"},
	{images.ErrUnsupportedFormat, api.CodeInvalidArgument, "convert it with `qemu-img convert -O qcow2`"},
	{images.ErrInvalidDigest, api.CodeInvalidArgument, "a sha256 is 64 hexadecimal characters"},
	{images.ErrInvalidURL, api.CodeInvalidArgument, "give an http:// or https:// URL"},
	{images.ErrChecksumNotListed, api.CodeInvalidArgument, "give the SHA256SUMS file published next to the image, or --sha256"},
	{images.ErrRemoteRefused, api.CodeInvalidArgument, "check the URL, e.g. with `curl -I URL`"},
	{images.ErrDownloadFailed, api.CodeUnavailable, "run the same pull again: it resumes where this one stopped"},
	{images.ErrForbiddenAddress, api.CodeInvalidArgument, "pull from a mirror elsewhere; labvmd never fetches from its own host or link-local addresses"},
	{images.ErrIncomplete, api.CodeInvalidArgument, "send the whole file again"},
	{storage.ErrDiskTooLarge, api.CodeInvalidArgument, ""},
	{dataset.ErrInvalid, api.CodeInvalidArgument, ""},
	{dataset.ErrSourceMissing, api.CodeConflict, "put the directory back (`labvm dataset list` shows where it belongs), or create an instance without that dataset"},
	{network.ErrSubnetFull, api.CodeQuotaExceeded, "delete unused instances or use another subnet"},
	{vm.ErrUnavailable, api.CodeUnavailable, "is libvirtd running? start it with `libvirtd -d` or `systemctl start libvirtd`"},
	{vm.ErrAgentUnavailable, api.CodeUnavailable, "the guest agent is not answering; wait for the instance to finish booting"},
	{vm.ErrJobFinished, api.CodeConflict, "only Queued or Running jobs can be cancelled; `labvm job list NAME` shows each job's state"},
	{context.DeadlineExceeded, api.CodeUnavailable, ""},
	{context.Canceled, api.CodeCancelled, ""},
}

// ToAPI turns any error into the wire error with a stable code. The
// message is the error's own; the hint is the nearest one attached to it,
// else the table's.
func ToAPI(err error) *api.Error {
	if err == nil {
		return nil
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	out := &api.Error{Code: api.CodeInternal, Message: err.Error(), Hint: hintOf(err)}
	var ke *Error
	if errors.As(err, &ke) {
		for _, c := range codes {
			if ke.Kind == c.kind {
				out.Code = c.code
				break
			}
		}
		return out
	}
	// A kind wrapped as such (fmt.Errorf("…: %w", ErrConflict)).
	for _, c := range codes {
		if errors.Is(err, c.kind) {
			out.Code = c.code
			return out
		}
	}
	for _, m := range sentinels {
		if errors.Is(err, m.err) {
			out.Code = m.code
			if out.Hint == "" {
				out.Hint = m.hint
			}
			return out
		}
	}
	if out.Hint == "" {
		out.Hint = "see labvmd's log for details"
	}
	return out
}

// Code is ToAPI(err).Code.
func Code(err error) api.Code { return ToAPI(err).Code }

// hintOf is the outermost hint attached to err.
func hintOf(err error) string {
	for e := err; e != nil; {
		switch v := e.(type) {
		case *hinted:
			return v.hint
		case *Error:
			if v.Hint != "" {
				return v.Hint
			}
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return ""
		}
		e = u.Unwrap()
	}
	return ""
}
