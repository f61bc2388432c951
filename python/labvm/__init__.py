"""labvm: a Python client for labvmd, standard library only.

Two layers:

* :class:`Client` — the HTTP/JSON API over labvmd's Unix socket:
  ``client.instances``, ``client.operations``, ``client.jobs``,
  ``client.datasets``, ``client.schedules``.
* :class:`ComputeInstance` — a familiar, notebook-style layer on top.

Errors are typed by the daemon's codes: :class:`NotFound`,
:class:`AlreadyExists`, … all :class:`LabvmError`, carrying ``.code``,
``.message`` and ``.hint``.
"""

from .client import DEFAULT_SOCKET, Client, Datasets, Instances, Jobs, Operations, Schedules
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
from .models import Dataset, IdleShutdown, Instance, Job, JobLogs, Operation, Schedule, ScheduleRun, Stage

__all__ = [
    "DEFAULT_SOCKET",
    "AlreadyExists",
    "Cancelled",
    "Client",
    "ComputeInstance",
    "ComputeJob",
    "Conflict",
    "Dataset",
    "Datasets",
    "IdleShutdown",
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
    "Schedule",
    "ScheduleRun",
    "Schedules",
    "Stage",
    "TooManyRequests",
    "Unavailable",
]
