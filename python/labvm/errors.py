"""Typed errors rebuilt from labvmd's error envelope.

Every non-2xx answer of labvmd is ``{"error": {"code", "message", "hint"}}``;
the code is stable (``daemon/api/errors.go``) and picks the exception class
here, so callers branch on classes, never on messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Operation


class LabvmError(Exception):
    """Base of every error the client raises.

    Attributes:
        code: the daemon's stable error code, e.g. ``"NotFound"``.
        message: what went wrong, for people.
        hint: what to do about it, or ``""``.
        operation: the finished operation, when the error is one an
            operation failed with (see ``Operations.wait``); else None.
    """

    code: str = "Internal"
    operation: Operation | None = None

    def __init__(self, message: str, hint: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class InvalidArgument(LabvmError):
    """A bad name, size, image, disk size, key or body (400)."""

    code = "InvalidArgument"


class NotFound(LabvmError):
    """No such instance, image, operation, job or endpoint (404)."""

    code = "NotFound"


class AlreadyExists(LabvmError):
    """The name is taken (409)."""

    code = "AlreadyExists"


class Conflict(LabvmError):
    """An illegal state transition, a busy instance, an image in use (409)."""

    code = "Conflict"


class QuotaExceeded(LabvmError):
    """No free address, or the core quota would be exceeded (429)."""

    code = "QuotaExceeded"


class PermissionDenied(LabvmError):
    """The caller may not do this, or may not open the socket (403)."""

    code = "PermissionDenied"


class Unavailable(LabvmError):
    """labvmd or something it needs cannot be reached (503)."""

    code = "Unavailable"


class InsufficientResources(LabvmError):
    """The host lacks disk space or memory (507)."""

    code = "InsufficientResources"


class RequestTooLarge(LabvmError):
    """The request body is over the daemon's limit (413)."""

    code = "RequestTooLarge"


class TooManyRequests(LabvmError):
    """The caller sent more than its share; retry later (429)."""

    code = "TooManyRequests"


class Cancelled(LabvmError):
    """The work was cancelled, e.g. superseded by a stop or delete."""

    code = "Cancelled"


class Internal(LabvmError):
    """A bug in labvmd, or an answer the client cannot read (500)."""

    code = "Internal"


_BY_CODE: dict[str, type[LabvmError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        Conflict,
        QuotaExceeded,
        PermissionDenied,
        Unavailable,
        InsufficientResources,
        RequestTooLarge,
        TooManyRequests,
        Cancelled,
        Internal,
    )
}


def error_from(envelope: dict[str, Any] | None, fallback: str = "") -> LabvmError:
    """Build the typed exception for an ``{"code", "message", "hint"}`` dict.

    An unknown code still becomes a :class:`LabvmError` that keeps the code,
    so a newer daemon's errors are not lost.
    """
    if not isinstance(envelope, dict):
        return Internal(fallback or "labvmd answered without an error body")
    code = str(envelope.get("code") or "Internal")
    message = str(envelope.get("message") or fallback or code)
    hint = str(envelope.get("hint") or "")
    cls = _BY_CODE.get(code)
    if cls is None:
        return LabvmError(message, hint, code=code)
    return cls(message, hint)
