package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/images"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/vm"
)

// errBusy is returned when another operation holds the instance.
var errBusy = errors.New("instance busy")

// errInUse is returned when something still needs the thing to delete.
var errInUse = errors.New("in use")

// errInterrupted ends a wait because the daemon is stopping; the next
// start's reconcile picks the work up again.
var errInterrupted = errors.New("interrupted: labvmd is stopping; the wait resumes when it starts again")

// errInvalid marks bad input found by the daemon itself.
var errInvalid = errors.New("invalid argument")

// errorCodes maps sentinel errors from every package to one API code.
// It is the only place that knows both sides, so packages stay free of
// HTTP and the API stays free of internals. First match wins.
var errorCodes = []struct {
	err  error
	code api.Code
	hint string
}{
	{store.ErrNotFound, api.CodeNotFound, ""},
	{store.ErrExists, api.CodeAlreadyExists, "pick another name, or delete the existing one first"},
	{vm.ErrIllegalTransition, api.CodeConflict, ""},
	{errBusy, api.CodeConflict, "wait for it with `labvm wait OPERATION`"},
	{errInUse, api.CodeConflict, ""},
	{vm.ErrInvalidName, api.CodeInvalidArgument, ""},
	{vm.ErrUnknownSize, api.CodeInvalidArgument, "run `labvm sizes` to see the sizes"},
	{errInvalid, api.CodeInvalidArgument, ""},
	{storage.ErrInvalidSeed, api.CodeInvalidArgument, ""},
	{images.ErrChecksumMismatch, api.CodeInvalidArgument, "check the file and the --sha256 value"},
	{images.ErrUnsupportedFormat, api.CodeInvalidArgument, "convert it with `qemu-img convert -O qcow2`"},
	{images.ErrInvalidDigest, api.CodeInvalidArgument, "a sha256 is 64 hexadecimal characters"},
	{images.ErrInvalidURL, api.CodeInvalidArgument, "give an http:// or https:// URL"},
	{images.ErrChecksumNotListed, api.CodeInvalidArgument, "give the SHA256SUMS file published next to the image, or --sha256"},
	{images.ErrRemoteRefused, api.CodeInvalidArgument, "check the URL, e.g. with `curl -I URL`"},
	{images.ErrDownloadFailed, api.CodeUnavailable, "run the same pull again: it resumes where this one stopped"},
	{network.ErrSubnetFull, api.CodeQuotaExceeded, "delete unused instances or use another subnet"},
	{vm.ErrUnavailable, api.CodeUnavailable, "is libvirtd running? start it with `libvirtd -d` or `systemctl start libvirtd`"},
	{vm.ErrAgentUnavailable, api.CodeUnavailable, "the guest agent is not answering; wait for the instance to finish booting"},
	{context.DeadlineExceeded, api.CodeUnavailable, ""},
	{errInterrupted, api.CodeUnavailable, "`labvm show` tells how the instance ended up once labvmd is back"},
	{errNoSuchJob, api.CodeNotFound, "`labvm job list NAME` shows the instance's jobs"},
	{vm.ErrJobFinished, api.CodeConflict, "only Queued or Running jobs can be cancelled; `labvm job list NAME` shows each job's state"},
	{errJobStillStopping, api.CodeUnavailable, "`labvm job list NAME` shows when it has ended"},
	{errNoJobRunner, api.CodeUnavailable, "jobs need the QEMU guest agent through libvirt's qemu driver"},
}

// toAPIError turns any error into the wire error with a stable code.
func toAPIError(err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	for _, m := range errorCodes {
		if errors.Is(err, m.err) {
			return &api.Error{Code: m.code, Message: err.Error(), Hint: m.hint}
		}
	}
	return &api.Error{Code: api.CodeInternal, Message: err.Error(), Hint: "see labvmd's log for details"}
}

// invalidError is bad input found by the daemon; it reads as its message
// alone and matches errInvalid.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == errInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}
