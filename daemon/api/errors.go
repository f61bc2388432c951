package api

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is a stable, machine-readable error code. Clients branch on codes,
// never on messages.
type Code string

const (
	CodeInvalidArgument  Code = "InvalidArgument"
	CodeNotFound         Code = "NotFound"
	CodeAlreadyExists    Code = "AlreadyExists"
	CodeConflict         Code = "Conflict"
	CodeQuotaExceeded    Code = "QuotaExceeded"
	CodePermissionDenied Code = "PermissionDenied"
	CodeUnavailable      Code = "Unavailable"
	// CodeInsufficientResources: the host lacks disk space or memory.
	CodeInsufficientResources Code = "InsufficientResources"
	CodeTooLarge              Code = "RequestTooLarge"
	// CodeTooManyRequests: a caller sent more than its share (connections,
	// refused calls); retry later.
	CodeTooManyRequests Code = "TooManyRequests"
	// CodeCancelled: the work was cancelled (an operation superseded by a
	// stop or delete, or a client that left).
	CodeCancelled Code = "Cancelled"
	CodeInternal  Code = "Internal"
)

// HTTPStatus is the status each code travels with.
func (c Code) HTTPStatus() int {
	switch c {
	case CodeInvalidArgument:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeAlreadyExists, CodeConflict:
		return http.StatusConflict
	case CodeQuotaExceeded, CodeTooManyRequests:
		return http.StatusTooManyRequests
	case CodeCancelled:
		return http.StatusConflict
	case CodePermissionDenied:
		return http.StatusForbidden
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	case CodeInsufficientResources:
		return http.StatusInsufficientStorage
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusInternalServerError
}

// Error is the error envelope: {"error":{"code":…,"message":…,"hint":…}}.
// It is also a Go error, so the client returns it as is and callers can
// errors.As it.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// Hint says what to do about it, when there is something to do.
	Hint string `json:"hint,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// ErrorResponse is the JSON body of every non-2xx response.
type ErrorResponse struct {
	Error *Error `json:"error"`
}

// Errorf builds an *Error.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code Code) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}
