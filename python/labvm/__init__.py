"""labvm: a Python client for labvmd, standard library only.

Two layers:

* :class:`Client` — the HTTP/JSON API over labvmd's Unix socket:
  ``client.instances``, ``client.operations``, ``client.jobs``.
* :class:`ComputeInstance` — a familiar, notebook-style layer on top.

Errors are typed by the daemon's codes: :class:`NotFound`,
:class:`AlreadyExists`, … all :class:`LabvmError`, carrying ``.code``,
``.message`` and ``.hint``.
"""

from .client import DEFAULT_SOCKET, Client, Instances, Jobs, Operations
from .compute import ComputeInstance, ComputeJob, ProvisioningConfiguration
from .errors import (
    AlreadyExists,
    Cancelled,
    Conflict,
    InsufficientResources,
    Internal,
    InvalidArgument,
    LabvmError,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RequestTooLarge,
    TooManyRequests,
    Unavailable,
)
from .models import Instance, Job, JobLogs, Operation, Stage

__all__ = [
    "DEFAULT_SOCKET",
    "AlreadyExists",
    "Cancelled",
    "Client",
    "ComputeInstance",
    "ComputeJob",
    "Conflict",
    "Instance",
    "Instances",
    "InsufficientResources",
    "Internal",
    "InvalidArgument",
    "Job",
    "JobLogs",
    "Jobs",
    "LabvmError",
    "NotFound",
    "Operation",
    "Operations",
    "PermissionDenied",
    "ProvisioningConfiguration",
    "QuotaExceeded",
    "RequestTooLarge",
    "Stage",
    "TooManyRequests",
    "Unavailable",
]
